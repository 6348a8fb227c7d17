"""The restock bench's workers with timestamps (`bench.restock --trace`): the project's Celery app, plus
a line per restock_place at each step a shortage's message takes inside the worker, on the clock the
bench reads (time.perf_counter is CLOCK_MONOTONIC, one clock for every process on the machine).

  received  the consumer has the message (celery's task_received)
  prerun    a pool thread starts the task (task_prerun)
  call      the task calls the factory (FactoryClient.place_order)
  connected its TCP connection to the factory is up (the client opens one per call)
  gc        a full garbage collection (generation 2) in the worker: its pid, start and end

Bench only: never imported by the app."""

import gc
import json
import os
import threading
import time

from celery import signals

from donutsite.celery import app  # noqa: F401 - `celery -A bench.worker_trace` finds the app here

_lock = threading.Lock()
_local = threading.local()
_out = open(os.environ["BENCH_TRACE_FILE"], "a", buffering=1)  # noqa: SIM115 - for the worker's life


def _write(step: str, restock_id) -> None:
    line = json.dumps([step, restock_id, time.perf_counter()])
    with _lock:
        _out.write(line + "\n")


_gc_started = [0.0]


def _gc_timed(phase, info):
    # Full collections only (generation 2): the ones long enough to show in a shortage's time.
    if info["generation"] != 2:
        return
    if phase == "start":
        _gc_started[0] = time.perf_counter()
    else:
        _write("gc", [os.getpid(), _gc_started[0], time.perf_counter()])


gc.callbacks.append(_gc_timed)


@signals.task_received.connect
def _received(request=None, **kwargs):
    if request.name == "factory.restock_place":
        _write("received", request.args[0] if request.args else None)


@signals.task_prerun.connect
def _prerun(task=None, args=None, **kwargs):
    if task.name == "factory.restock_place":
        _local.restock_id = args[0]
        _write("prerun", args[0])


@signals.worker_init.connect
def _patch(**kwargs):
    from factory.client import FactoryClient

    place_order = FactoryClient.place_order

    def timed_place_order(self, **kwargs):
        _write("call", getattr(_local, "restock_id", None))
        return place_order(self, **kwargs)

    FactoryClient.place_order = timed_place_order

    from factory.client import _HTTPConnection

    new_conn = _HTTPConnection._new_conn

    def timed_new_conn(self):
        sock = new_conn(self)
        _write("connected", getattr(_local, "restock_id", None))
        return sock

    _HTTPConnection._new_conn = timed_new_conn
