from django.core.management.base import BaseCommand, CommandError

from inventory.models import ApiClient


class Command(BaseCommand):
    help = "Create an API client and print its key once, as the last line. Only a hash is stored."

    def add_arguments(self, parser):
        parser.add_argument("name")

    def handle(self, *args, name, **options):
        if ApiClient.objects.filter(name=name).exists():
            raise CommandError(f"An API client named {name!r} exists already; pick another name.")
        client = ApiClient(name=name)
        key = client.set_new_key()
        client.save()
        self.stdout.write(f"API client {name!r} created. Send: Authorization: Api-Key <key>. The key:")
        self.stdout.write(key)
