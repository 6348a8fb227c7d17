"""Lift login lockouts: `manage.py admin_login_unlock USERNAME [--address ADDR]` (the admin's),
`--flower [--address ADDR]` (Flower's), or `--all` (both)."""

import ipaddress

import redis
from django.core.management.base import BaseCommand, CommandError

from donutsite import login_throttle, ratelimit
from donutsite.flower import login_counter as flower_counter


class Command(BaseCommand):
    # An operator locked out at night reaches for `--all` to get back in: it lifts Flower's lockouts too, as
    # "every lockout" reads. A username names an admin account and never Flower's (its lockout is per address).
    help = (
        "Forget failed logins: an admin account's (from one address, or from all), Flower's (--flower: from one "
        "address, or from all), or --all: every lockout, the admin's and Flower's."
    )

    def add_arguments(self, parser):
        parser.add_argument("username", nargs="?", help="the admin account to unlock")
        parser.add_argument(
            "--address",
            help=f'only from this client IP address, v4 or v6, or "{ratelimit.UNKNOWN_ADDRESS}" for requests that '
            "came with none (default: from every address)",
        )
        parser.add_argument(
            "--flower",
            action="store_true",
            help="Flower's login instead of the admin's (with no USERNAME: Flower locks out an address, not an "
            "account)",
        )
        parser.add_argument(
            "--all",
            action="store_true",
            help="every lockout: every admin account and Flower's login, from every address (alone)",
        )

    def handle(self, *args, username=None, address=None, flower=False, all=False, **options):
        if all and (username or address is not None or flower):
            # Either was ignored: `--all --address A` unlocked every account from every address.
            raise CommandError(
                "--all unlocks every lockout, the admin's and Flower's, from every address; give it alone."
            )
        if flower and username:
            raise CommandError(
                "Flower's login is locked out per address, not per account: give --flower without a username "
                "(and --address A for one address)."
            )
        if not (all or flower or username):
            raise CommandError("Name one account, or pass --flower or --all.")
        counted = "*" if address is None else ratelimit.address_counted(_ip_address(address))
        unlocked = "nothing unlocked"
        try:
            if all or username:
                account = "*" if all else login_throttle.account_tag(username)
                forgotten = ratelimit.forget_matching(f"admin-login:{account}:{counted}")
                self.stdout.write(f"Unlocked {len(forgotten)} account/address pair(s).")
                unlocked = "Flower's login not unlocked"  # --all: the admin's are, as printed
            if all or flower:
                forgotten = ratelimit.forget_matching(flower_counter(counted))
                self.stdout.write(f"Unlocked Flower's login from {len(forgotten)} address(es).")
        except (redis.RedisError, OSError) as exc:
            # The limits fail open meanwhile (docs/reliability.md, "How each limit is keyed").
            raise CommandError(
                f"cannot reach Redis, where the lockouts are kept ({exc!r}): {unlocked}; while it does not "
                "answer, logins are not limited",
                returncode=1,
            ) from exc


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
