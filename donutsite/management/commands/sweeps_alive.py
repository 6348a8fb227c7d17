"""`manage.py sweeps_alive [--max-age SECONDS]`: a liveness probe for beat and the sweeps it drives."""

import redis
from django.core.management.base import BaseCommand, CommandError

from donutsite.management import positive_seconds
from donutsite.sweeps import late_after, sweep_ages


class Command(BaseCommand):
    help = (
        "Exit 0 if every periodic sweep (factory.reconcile, notifications.sweep) finished within --max-age "
        "seconds, else 1: beat or the workers that run them are stopped, wedged or far behind."
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "--max-age",
            type=positive_seconds,
            default=None,
            help="seconds (default: 6 sweep intervals, 6 x RECONCILE_INTERVAL_SECONDS, at least 30)",
        )

    def handle(self, *args, max_age, **options):
        max_age = max_age if max_age is not None else late_after()
        try:
            ages = sweep_ages()
        except (redis.RedisError, OSError) as exc:
            raise CommandError(f"cannot read the sweeps' last runs from Redis: {exc!r}", returncode=1) from exc
        late = []
        for name, age in ages.items():
            if age is None or age > max_age:
                late.append(f"{name} {'never ran' if age is None else f'last finished {age:.0f} s ago'}")
            else:
                self.stdout.write(f"{name} finished {age:.1f} s ago")
        if late:
            raise CommandError(f"late (over {max_age:g} s): {'; '.join(late)}", returncode=1)
