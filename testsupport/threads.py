"""Threads for tests that race two transactions against each other."""

import threading

from django.db import connections


def thread_keeping(outcomes: dict, name: str, fn) -> threading.Thread:
    """A thread (not started) that runs `fn` on connections of its own and keeps what it returned or raised
    in outcomes[name]."""

    def run_and_keep():
        try:
            outcomes[name] = fn()
        except Exception as exc:
            outcomes[name] = exc
        finally:
            connections.close_all()

    return threading.Thread(target=run_and_keep)
