from django.core.management.base import BaseCommand, CommandError
from django.db import IntegrityError, transaction

from clients.models import ApiClient


class Command(BaseCommand):
    help = "Create an API client and print its key once, as the last line. Only a hash is stored."

    def add_arguments(self, parser):
        parser.add_argument("name")

    def handle(self, *args, name, **options):
        # As the admin's form takes it: stripped, required, within the column (else a DataError traceback).
        name = name.strip()
        longest = ApiClient._meta.get_field("name").max_length
        if not name or len(name) > longest:
            raise CommandError(f"Give the client a name of 1 to {longest} characters.")
        client = ApiClient(name=name)
        key = client.set_new_key()
        try:
            with transaction.atomic():
                client.save()
        except IntegrityError:  # the name is taken (checked by the unique index, so a race cannot slip by)
            raise CommandError(f"An API client named {name!r} exists already; pick another name.") from None
        self.stdout.write(f"API client {name!r} created. Send: Authorization: Api-Key <key>. The key:")
        self.stdout.write(key)
