"""Run the legacy factory simulator as its own process: a slow factory must not take the app's web workers."""

import argparse
import os
import signal
import threading

from django.core.management.base import BaseCommand, CommandError

from factory.simulator import (
    DEFAULT_API_KEY,
    DEFAULT_CALLBACK_SECRET,
    FaultConfig,
    LegacyFactory,
    parse_latency,
)


def _rate(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError(f"{text} is not between 0 and 1")
    return value


def _latency(text: str) -> tuple[float, float]:
    try:
        return parse_latency(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text} is negative")
    return value


class Command(BaseCommand):
    help = (
        "Serve the legacy factory's order API (as its contract describes it) with injectable "
        "faults, plus /_sim/ control endpoints for localhost. Stdlib only, state in memory (and in "
        "--state-file, which a restart reads back); Ctrl-C or SIGTERM stops it."
    )
    requires_system_checks = []  # it touches neither the database nor the app's models

    def add_arguments(self, parser):
        parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
        parser.add_argument("--port", type=int, default=8081, help="port to bind; 0 picks a free one (default 8081)")
        parser.add_argument(
            "--api-key",
            default=os.environ.get("FACTORY_API_KEY", DEFAULT_API_KEY),
            help="expected X-Factory-Key (default: $FACTORY_API_KEY or dev-factory-key)",
        )
        parser.add_argument(
            "--callback-secret",
            default=os.environ.get("FACTORY_CALLBACK_SECRET", DEFAULT_CALLBACK_SECRET),
            help="HMAC key for callback signatures (default: $FACTORY_CALLBACK_SECRET or dev-callback-secret)",
        )
        rates = {
            "--error-rate": "share of POST /v1/orders answered 500/502/503",
            "--error-after-create-rate": "share of those errors that come after the order was created",
            "--rate-limit-rate": "share of POST /v1/orders answered 429 with Retry-After",
            "--hang-rate": "share of POST /v1/orders that create the order, then never answer",
            "--partial-rate": "share of completed orders with quantity_produced below quantity",
            "--cancel-rate": "share of orders the factory cancels instead of completing",
            "--callback-loss-rate": "share of callbacks never sent",
            "--duplicate-callback-rate": "share of callbacks sent twice",
        }
        for flag, text in rates.items():
            parser.add_argument(flag, type=_rate, default=0.0, metavar="R", help=f"{text} (0-1, default 0)")
        parser.add_argument(
            "--latency-ms",
            type=_latency,
            default=(0.0, 0.0),
            metavar="MIN[-MAX]",
            help="random delay before answering each /v1 request, in milliseconds (default 0)",
        )
        parser.add_argument(
            "--production-seconds", type=_seconds, default=3.0, metavar="S", help="time to produce (default 3)"
        )
        parser.add_argument(
            "--hang-seconds", type=_seconds, default=600.0, metavar="S", help="how long a hang lasts (default 600)"
        )
        parser.add_argument(
            "--callback-retry-base",
            type=_seconds,
            default=1.0,
            metavar="S",
            help="first callback retry delay, doubling per attempt up to 300 s (default 1)",
        )
        parser.add_argument(
            "--callback-max-attempts", type=int, default=8, metavar="N", help="callback attempts (default 8)"
        )
        parser.add_argument("--seed", type=int, default=None, metavar="N", help="seed the fault dice")
        parser.add_argument(
            "--state-file",
            default=None,
            metavar="PATH",
            help="keep the orders, their references and the numbering in PATH (JSON, written at every change) "
            "and go on from it at the next start, as the real factory does across its restarts "
            "(default: none, a restart forgets every order)",
        )
        parser.add_argument(
            "--control-from-anywhere",
            action="store_true",
            help="answer /_sim/ to any client, not only localhost (e.g. inside docker compose)",
        )

    def handle(self, *args, **options):
        try:
            config = FaultConfig(
                error_rate=options["error_rate"],
                error_after_create_rate=options["error_after_create_rate"],
                rate_limit_rate=options["rate_limit_rate"],
                hang_rate=options["hang_rate"],
                hang_seconds=options["hang_seconds"],
                latency_ms=options["latency_ms"],
                production_seconds=options["production_seconds"],
                partial_rate=options["partial_rate"],
                cancel_rate=options["cancel_rate"],
                callback_loss_rate=options["callback_loss_rate"],
                duplicate_callback_rate=options["duplicate_callback_rate"],
                callback_max_attempts=options["callback_max_attempts"],
                callback_retry_base_seconds=options["callback_retry_base"],
            )
        except ValueError as exc:
            raise CommandError(str(exc)) from None
        try:
            simulator = LegacyFactory(
                config,
                host=options["host"],
                port=options["port"],
                api_key=options["api_key"],
                callback_secret=options["callback_secret"],
                seed=options["seed"],
                control_from_anywhere=options["control_from_anywhere"],
                state_file=options["state_file"],
            )
        except (ValueError, OSError) as exc:
            raise CommandError(str(exc)) from None
        stop = threading.Event()

        def request_stop(signum, frame):
            stop.set()

        previous = {sig: signal.signal(sig, request_stop) for sig in (signal.SIGTERM, signal.SIGINT)}
        try:
            try:
                url = simulator.start()
            except OSError as exc:
                raise CommandError(f"cannot listen on {options['host']}:{options['port']}: {exc}") from None
            defaults = FaultConfig().as_dict()
            faults = {k: v for k, v in config.as_dict().items() if v != defaults[k]}
            state = f" state={simulator.state_file} ({len(simulator.orders())} orders)" if simulator.state_file else ""
            self.stdout.write(f"legacy factory simulator listening on {url} faults={faults or 'none'}{state}")
            self.stdout.flush()
            while not stop.wait(0.5):
                pass
            self.stdout.write("legacy factory simulator stopping")
        finally:
            simulator.stop()
            for sig, handler in previous.items():
                signal.signal(sig, handler)
