"""Lift admin login lockouts: `manage.py admin_login_unlock USERNAME [--address ADDR]`, or `--all`."""

from django.core.management.base import BaseCommand, CommandError

from donutsite import login_throttle, ratelimit


class Command(BaseCommand):
    help = "Forget failed admin logins: one account (from one address, or from all), or every lockout."

    def add_arguments(self, parser):
        parser.add_argument("username", nargs="?", help="the account to unlock")
        parser.add_argument("--address", help="only from this client address (default: from every address)")
        parser.add_argument("--all", action="store_true", help="every account from every address")

    def handle(self, *args, username=None, address=None, all=False, **options):
        if all == bool(username):
            raise CommandError("Name one account, or pass --all.")
        if all:
            pattern = "admin-login:*"
        else:
            counted = ratelimit.address_counted(address) if address else "*"
            pattern = f"admin-login:{login_throttle.account_tag(username)}:{counted}"
        forgotten = ratelimit.forget_matching(pattern)
        self.stdout.write(f"Unlocked {len(forgotten)} account/address pair(s).")
