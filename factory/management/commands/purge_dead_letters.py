from django.core.management.base import BaseCommand

from donutsite.management import age_in_days
from factory.redrive import dead_letters_purge


class Command(BaseCommand):
    help = (
        "Delete resolved dead letters (redriven, or settled by the factory) whose last failure is older than "
        "N days. Unresolved ones stay."
    )

    def add_arguments(self, parser):
        parser.add_argument("--older-than-days", type=age_in_days, default=30, metavar="N", help="Default 30.")
        parser.add_argument("--dry-run", action="store_true", help="Only count; delete nothing.")

    def handle(self, *args, older_than_days, dry_run, **options):
        count = dead_letters_purge(older_than_days=older_than_days, dry_run=dry_run)
        what = f"resolved dead letter{'s' if count != 1 else ''} older than {older_than_days} days"
        if dry_run:
            self.stdout.write(f"dry run: would delete {count} {what}; nothing deleted")
        else:
            self.stdout.write(f"deleted {count} {what}")
