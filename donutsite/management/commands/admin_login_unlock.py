"""Lift admin login lockouts: `manage.py admin_login_unlock USERNAME [--address ADDR]`, or `--all`."""

import ipaddress

from django.core.management.base import BaseCommand, CommandError

from donutsite import login_throttle, ratelimit


class Command(BaseCommand):
    help = "Forget failed admin logins: one account (from one address, or from all), or every lockout."

    def add_arguments(self, parser):
        parser.add_argument("username", nargs="?", help="the account to unlock")
        parser.add_argument(
            "--address",
            help=f'only from this client IP address, v4 or v6, or "{ratelimit.UNKNOWN_ADDRESS}" for requests that '
            "came with none (default: from every address)",
        )
        parser.add_argument(
            "--all", action="store_true", help="every account from every address (with no USERNAME nor --address)"
        )

    def handle(self, *args, username=None, address=None, all=False, **options):
        if all and (username or address is not None):
            # Either was ignored: `--all --address A` unlocked every account from every address.
            raise CommandError("--all unlocks every account from every address; give it alone.")
        if not all and not username:
            raise CommandError("Name one account, or pass --all.")
        if all:
            pattern = "admin-login:*"
        else:
            counted = "*" if address is None else ratelimit.address_counted(_ip_address(address))
            pattern = f"admin-login:{login_throttle.account_tag(username)}:{counted}"
        forgotten = ratelimit.forget_matching(pattern)
        self.stdout.write(f"Unlocked {len(forgotten)} account/address pair(s).")


def _ip_address(address: str) -> str:
    """`address` if it is an IP address, or the name of the bucket of requests that came with none (what the
    lockout's log line says); a CommandError naming it if not. A lockout is counted under the address a
    request came from, so anything else unlocked nothing and said "Unlocked 0", and a glob (`*`) or an empty
    value unlocked the account from every address."""
    if address == ratelimit.UNKNOWN_ADDRESS:
        return address
    try:
        ipaddress.ip_address(address)
    except ValueError:
        raise CommandError(
            f'"{address}" is not an IP address (such as 192.0.2.1 or 2001:db8::1), '
            f'nor "{ratelimit.UNKNOWN_ADDRESS}" (requests that came with none).'
        ) from None
    return address
