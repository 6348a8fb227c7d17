from contextlib import ExitStack

from django.core.management.base import BaseCommand, CommandError

from donutsite.management import EX_TEMPFAIL, positive_seconds
from donutsite.sweeps import sweep_alone
from factory.services import reconcile
from inventory.services import idempotency_keys_purge

# The sweeps this command runs, by the names of their beat tasks, whose guards it takes (in this order).
SWEEPS = ("factory.reconcile", "inventory.idempotency_keys_purge")


class Command(BaseCommand):
    help = (
        "Run the sweeps now: the factory's reconcile (beat runs it every RECONCILE_INTERVAL_SECONDS) and the "
        "purge of expired Idempotency-Keys (every 5 minutes). A run of either under way (beat's) is waited "
        f"for up to --wait seconds; still under way then, nothing is done and the exit status is {EX_TEMPFAIL}."
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "--wait",
            type=positive_seconds,
            default=10.0,
            help="seconds to wait for a run of each sweep under way (default 10)",
        )

    def handle(self, *args, wait, **options):
        # Both guards before any work, as beat's runs take them (donutsite.sweeps.single_flight): side by side
        # with a beat run the command handed the same restocks over twice. A healthy run ends well within the
        # wait; one that holds the guard longer is wedged, which an operator should hear about, not queue behind.
        with ExitStack() as guards:
            for sweep in SWEEPS:
                if not guards.enter_context(sweep_alone(sweep, wait=wait)):
                    raise CommandError(
                        f"another {sweep} run is under way and did not end within {wait:g} s; nothing done: "
                        "run this again later",
                        returncode=EX_TEMPFAIL,
                    )
            # Not noted as the sweep finishing (sweep_finished): that tells whether beat and the worker that
            # runs the sweep are alive, which a run by hand says nothing of.
            result = {**reconcile(), "idempotency_keys_purged": idempotency_keys_purge()}
        self.stdout.write(", ".join(f"{k.replace('_', ' ')}: {v}" for k, v in result.items()))
