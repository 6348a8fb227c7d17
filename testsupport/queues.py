"""The test broker's Celery queues, read and emptied as Redis lists (kombu's layout)."""

import ast
import json

import redis
from celery import current_app

from factory.retries import DEAD_LETTER_QUEUE

QUEUES = ("factory_urgent", "factory", DEAD_LETTER_QUEUE)


def broker():
    return redis.Redis.from_url(current_app.conf.broker_url)


def clear_queues():
    broker().delete(*QUEUES)


def queued(queue="factory") -> list[tuple[str, list]]:
    """(task name, args) of each message waiting in a queue (a Redis list), oldest first."""
    raw = reversed(broker().lrange(queue, 0, -1))  # kombu pushes on the left and pops on the right
    messages = [json.loads(message)["headers"] for message in raw]
    return [(m["task"], list(ast.literal_eval(m["argsrepr"]))) for m in messages]


def queued_restocks() -> list[int]:
    """The restock ids of the factory.restock_place messages waiting in the factory queue."""
    return [args[0] for task, args in queued("factory") if task == "factory.restock_place"]
