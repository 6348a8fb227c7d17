import gc
import inspect
import logging
import os
import threading
import warnings

from celery import Celery, Task
from celery.exceptions import CPendingDeprecationWarning
from celery.signals import (
    before_task_publish,
    setup_logging,
    task_postrun,
    task_prerun,
    worker_init,
    worker_process_init,
    worker_ready,
)
from kombu import Queue
from kombu.pools import ProducerPool

from donutsite.context import request_id, request_id_new, request_id_valid

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "donutsite.settings")

# The workers' node names, the same in make run (scripts/run.sh) and docker-compose.yml; `manage.py
# worker_alive` with no arguments pings these.
WORKER_NODES = ("factory@%h", "urgent@%h", "notifications@%h")


class ArgumentCheckedTask(Task):
    """Every task's base (the app's task_cls; factory.retries.RetryingTask builds on it). While a deploy runs
    old and new processes side by side, a worker may get a message sent by another release, with arguments
    its task does not take. That is no failure of the work, and a TypeError would only add a traceback: the
    message is dropped with one line naming the task and the arguments, and the work is left to the sweep
    that watches it (each task's work is a row a sweep resends, or a sweep of its own)."""

    def __call__(self, *args, **kwargs):
        try:
            inspect.signature(self.run).bind(*args, **kwargs)
        except TypeError as exc:
            logging.getLogger(__name__).error(
                "%s%r%r: a message this task cannot take (%s); dropped, its work is left to the sweep",
                self.name,
                args,
                kwargs,
                exc,
            )
            return None
        return super().__call__(*args, **kwargs)


app = Celery("donutsite", task_cls=ArgumentCheckedTask)
app.config_from_object("django.conf:settings", namespace="CELERY")
app.conf.task_queues = [Queue(name) for name in app.conf.task_queues_names]
app.autodiscover_tasks()


def routed_queue(task_name: str) -> str:
    """The queue CELERY_TASK_ROUTES gives a task sent by its plain name."""
    return app.amqp.router.route({}, task_name)["queue"].name


@worker_init.connect
def refuse_unsafe_timing(sender=None, **kwargs):
    """A worker must not start with time limits that let Redis hand a running task to a second worker;
    it logs what bounds a task on its pool (the threads pool enforces no time limit).

    SystemExit, not an exception: Celery logs and ignores any Exception a worker_init receiver raises."""
    from django.core import checks

    from donutsite.checks import TIMING_TAG, task_bound

    # Every app's timing checks (donutsite's, notifications'): registered under one tag, so this module
    # names no app.
    problems = [error.msg for error in checks.run_checks(tags=[TIMING_TAG]) if error.is_serious()]
    if problems:
        raise SystemExit("refusing to start: " + "; ".join(problems))
    pool = getattr(sender, "pool_cls", "prefork")
    pool = pool if isinstance(pool, str) else pool.__module__.rsplit(".", 1)[-1].replace("thread", "threads")
    logging.getLogger(__name__).info("task time bound: %s", task_bound(pool))


@worker_init.connect
def lost_channels_raise_connection_errors(**kwargs):
    """Celery/kombu 5.7 workers exited ("Unrecoverable error: AttributeError: 'NoneType' object has no
    attribute 'hostname'") when Redis went away while they held unacknowledged messages. Once the lost
    connection is collected its channels have no transport left, and a channel used after that (closing it
    gives the held messages back to Redis; a task that finishes acknowledges its message) failed with an
    AttributeError where Celery expects a connection error, which it logs and recovers from. Such a channel
    now raises redis's ConnectionError: the worker reconnects, and a message it could neither give back nor
    acknowledge is handed out again by Redis after the visibility timeout (tasks are idempotent)."""
    import redis
    from kombu.transport import redis as kombu_redis

    connparams = kombu_redis.Channel._connparams  # where a channel reads its connection's address
    if getattr(connparams, "checks_the_transport", False):
        return

    def checked(channel, *args, **kwargs):
        if channel.connection is None or channel.connection.client is None:
            raise redis.exceptions.ConnectionError("the broker connection of this channel was lost and closed")
        return connparams(channel, *args, **kwargs)

    checked.checks_the_transport = True
    kombu_redis.Channel._connparams = checked


@worker_init.connect
def stale_pool_watches_skipped(**kwargs):
    """Celery/kombu 5.7 prefork workers exited ("Unrecoverable error: ValueError('file descriptor is
    None')") when they reconnected to Redis after their pool processes had been killed together. Celery
    watches each pool process's exit through a copy of its sentinel fd; when two die at once, the second's
    exit event can arrive after the first's clean-up closed that copy and a new process's copy took its
    number, and Celery then drops the watch of that new, live process (its fd becomes None). Every
    reconnect registers the pool's fds again; kombu 5.7 answers None with a ValueError, expecting Celery to
    treat it as the stale fd it logs and skips, and Celery 5.7.0 lets it kill the worker. Such a None is
    now logged and skipped: the pool's check every 5 s still replaces that process when it exits."""
    from celery.concurrency import asynpool

    iterate = asynpool.iterate_file_descriptors_safely  # looked up by name at each call in asynpool
    if getattr(iterate, "skips_none", False):
        return

    def skipping_none(fds_iter, source_data, hub_method, *args, **kwargs):
        fds = list(fds_iter)
        if None in fds:
            logging.getLogger(__name__).warning(
                "a pool process no longer watched for its exit (fd None) skipped; the pool's periodic check"
                " replaces it when it exits"
            )
        return iterate([fd for fd in fds if fd is not None], source_data, hub_method, *args, **kwargs)

    skipping_none.skips_none = True
    asynpool.iterate_file_descriptors_safely = skipping_none


@worker_ready.connect
@worker_process_init.connect
def gc_freeze(**kwargs):
    """Move everything the worker loaded at start (Django, the apps, Celery, kombu) to the garbage
    collector's permanent generation: a full collection then walks only what tasks made since. Such a
    collection stops every thread of the worker; in the urgent worker it took 45 ms and, landing inside a
    shortage's way to the factory, made the slowest of 50 (docs/benchmarks.md, "Restock latency"). Frozen:
    about 26 ms. A prefork child freezes what it has after its own start."""
    gc.freeze()


@worker_ready.connect
def connection_loss_warning_ignore(**kwargs):
    """Celery warns at every broker connection loss that version 6 will cancel running tasks by default;
    the settings choose not to, on purpose (CELERY_WORKER_CANCEL_LONG_RUNNING_TASKS_ON_CONNECTION_LOSS
    says why). Filtered once the worker is up: its logging setup puts an "always" filter for Celery's
    warnings in front of any made before."""
    warnings.filterwarnings(
        "ignore", r"\s*In Celery 5\.1 we introduced an optional breaking change", CPendingDeprecationWarning
    )


# The request id travels in a message header of our own: Celery's correlation_id is the task id.
REQUEST_ID_HEADER = "request_id"


@before_task_publish.connect
def request_id_to_message(headers=None, **kwargs):
    """A task sent while handling a request or running a task carries that request id."""
    current = request_id.get()
    if current and headers is not None:
        headers.setdefault(REQUEST_ID_HEADER, current)


@task_prerun.connect
def request_id_from_message(task=None, **kwargs):
    """A task runs under the request id its message brought, or a new one (beat's, a hand-sent task's), so
    its log lines, the alerts it raises and the tasks it sends share one id."""
    given = getattr(task.request, REQUEST_ID_HEADER, None)
    task.request.request_id_token = request_id.set(given if request_id_valid(given) else request_id_new())


@task_postrun.connect
def request_id_forget(task=None, **kwargs):
    token = getattr(task.request, "request_id_token", None)
    if token is not None:
        request_id.reset(token)


@setup_logging.connect
def use_django_logging(loglevel=None, **kwargs):
    """Workers and beat log through settings.LOGGING (request ids; JSON lines in production) instead of
    the handlers Celery would install; the -l level on the command line still applies."""
    from logging.config import dictConfig

    from django.conf import settings

    dictConfig(settings.LOGGING)
    if loglevel:
        logging.getLogger().setLevel(loglevel)


# task_publish's connections: pooled per broker URL and per process (a forked child starts without them).
_publish_pools: dict = {}
_publish_pools_lock = threading.Lock()
os.register_at_fork(after_in_child=_publish_pools.clear)


def _publish_pool(url: str, timeout: float) -> ProducerPool:
    with _publish_pools_lock:
        if url not in _publish_pools:
            options = {"max_retries": 0, "socket_connect_timeout": timeout, "socket_timeout": timeout}
            connections = app.connection_for_write(url, transport_options=options).Pool(limit=20)
            _publish_pools[url] = ProducerPool(connections, limit=20, Producer=app.amqp.Producer)
        return _publish_pools[url]


def task_publish(name: str, args: list, **options) -> bool:
    """Send a task by name, trying once, on a connection that gives up after BROKER_PUBLISH_TIMEOUT_SECONDS:
    for after-commit sends whose row a sweep resends, so a refused or hung broker costs the caller a
    fraction of a second instead of kombu's ~6 s of reconnecting. After a failure the broker's circuit
    breaker (donutsite/dependencies.py) skips the broker for WEB_DEPENDENCY_PAUSE_SECONDS, so a request
    that sends several tasks waits for one try at most. Returns False, logged, when the message did not
    leave (one info line per task; the breaker warns once per outage). `options` go to send_task (route_name)."""
    from django.conf import settings

    from donutsite.dependencies import breakers

    breaker = breakers["broker"]
    if breaker.is_open:
        logging.getLogger(__name__).info("%s%s not sent: the broker's breaker is open", name, args)
        return False
    timeout = settings.BROKER_PUBLISH_TIMEOUT_SECONDS
    try:
        with _publish_pool(app.conf.broker_write_url, timeout).acquire(block=True, timeout=timeout) as producer:
            app.send_task(name, args=args, producer=producer, retry=False, **options)
    except Exception as exc:  # any broker failure: the caller's row stays unsent and its sweep resends it
        # One line per task not sent, as while the breaker is open; the outage's warning is the breaker's.
        logging.getLogger(__name__).info("%s%s not sent, broker unavailable (%r)", name, args, exc)
        breaker.trip(exc)
        return False
    breaker.answered()
    return True
