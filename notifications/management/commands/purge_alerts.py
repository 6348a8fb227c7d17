from django.core.management.base import BaseCommand

from donutsite.management import age_in_days
from notifications.alerts import alerts_purge


class Command(BaseCommand):
    help = (
        "Delete acknowledged alerts, and info ones (nothing to acknowledge), older than N days, with their "
        "deliveries, and the storm groups that ended before then. Open warnings and critical alerts stay, and "
        "so do alerts with a send still owed or that an open group still reads, and groups with a summary owed."
    )

    def add_arguments(self, parser):
        parser.add_argument("--older-than-days", type=age_in_days, default=30, metavar="N", help="Default 30.")
        parser.add_argument("--dry-run", action="store_true", help="Only count; delete nothing.")

    def handle(self, *args, older_than_days, dry_run, **options):
        count, groups = alerts_purge(older_than_days=older_than_days, dry_run=dry_run)
        what = (
            f"acknowledged or info alert{'s' if count != 1 else ''} older than {older_than_days} days, "
            f"with {'their' if count != 1 else 'its'} deliveries, "
            f"and {groups} storm group{'s' if groups != 1 else ''} that ended before then"
        )
        if dry_run:
            self.stdout.write(f"dry run: would delete {count} {what}; nothing deleted")
        else:
            self.stdout.write(f"deleted {count} {what}")
