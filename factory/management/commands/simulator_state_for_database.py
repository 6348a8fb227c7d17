"""make run's check before it starts the factory simulator with a state file (scripts/run.sh)."""

import time
from pathlib import Path

from django.core.management.base import BaseCommand

from inventory.models import Restock


class Command(BaseCommand):
    help = (
        "Set the factory simulator's state file aside (renamed beside it) when this database has no restock: "
        "its orders are another database's, and this one numbers its restocks from 1 again, so the simulator "
        "would answer restock-1 with the old order (a 200 for one long finished, or a 409 that dead-letters it)."
    )

    def add_arguments(self, parser):
        parser.add_argument("state_file", help="the simulator's --state-file")

    def handle(self, *args, **options):
        state = Path(options["state_file"])
        if not state.exists() or Restock.objects.exists():
            return
        aside = state.with_name(f"{state.stem}.{int(time.time())}{state.suffix}")
        state.rename(aside)
        self.stdout.write(
            f"This database has no restock yet: the factory simulator's earlier orders are set aside in {aside}, "
            "and it starts with none."
        )
