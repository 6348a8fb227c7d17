"""donut-states settings, read from the environment (see the README's table).

Development (`make run`) sets DJANGO_DEBUG=1 and a throwaway secret key; anything else is production
and refuses to start without DJANGO_SECRET_KEY.

A `.env` beside manage.py, when there is one, fills in what the environment leaves unset: `make run`
writes its settings there so that `manage.py` works from a second terminal. The image never has one
(.dockerignore keeps `.env` out of the build context; compose passes it as the containers'
environment instead), and `make test` turns the file off (DJANGO_ENV_FILE empty) so a developer's
`make run` settings never leak into tests.
"""

import ipaddress
import os
import re
from pathlib import Path
from urllib.parse import urlsplit

import environ
from django.core.exceptions import ImproperlyConfigured

BASE_DIR = Path(__file__).resolve().parent.parent

env = environ.Env()
# Variables already in the environment win over the file (read_env only sets what is unset).
_ENV_FILE = os.environ.get("DJANGO_ENV_FILE", str(BASE_DIR / ".env"))
if _ENV_FILE and Path(_ENV_FILE).is_file():
    environ.Env.read_env(_ENV_FILE)

DEBUG = env.bool("DJANGO_DEBUG", default=False)
SECRET_KEY = env.str("DJANGO_SECRET_KEY", default="")
if not SECRET_KEY:
    raise ImproperlyConfigured("DJANGO_SECRET_KEY must be set (make run and make test set one for you).")

ALLOWED_HOSTS = env.list("DJANGO_ALLOWED_HOSTS", default=["localhost", "127.0.0.1"])
CSRF_TRUSTED_ORIGINS = env.list("DJANGO_CSRF_TRUSTED_ORIGINS", default=[])

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "donutsite",
    "clients",
    "inventory",
    "factory",
    "notifications",
    "ops",
]

MIDDLEWARE = [
    "donutsite.middleware.RequestIdMiddleware",  # first: every later middleware logs with the id
    "donutsite.middleware.HeadMiddleware",  # a HEAD's body dropped here, above all that can make one
    "donutsite.csp.ContentSecurityPolicyMiddleware",  # above everything that can answer with a page
    "donutsite.middleware.ApiMiddleware",  # JSON errors under /api/ from everything below it
    "donutsite.requestbody.BodySizeMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "donutsite.login_throttle.AdminLoginThrottleMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "donutsite.unavailable.DatabaseUnavailableMiddleware",  # a database error in a view: 503, not 500
]

# Admin messages live in the (database) session, not in a cookie: a new API key is shown once in one,
# and a signed cookie is readable by anyone who sees it.
MESSAGE_STORAGE = "django.contrib.messages.storage.session.SessionStorage"

# The only login is the admin's: a login posted without `next` lands on the admin, not on Django's
# default /accounts/profile/ (which does not exist here).
LOGIN_REDIRECT_URL = "admin:index"

ROOT_URLCONF = "donutsite.urls"
WSGI_APPLICATION = "donutsite.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "donutsite" / "templates"],  # before the apps: it overrides admin/index.html
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

# SQLite is only the embedded default for a first `make run`; tests refuse it (row locks do nothing there).
DATABASES = {"default": env.db("DATABASE_URL", default=f"sqlite:///{BASE_DIR / 'db.sqlite3'}")}
DATABASES["default"]["CONN_MAX_AGE"] = env.int("DATABASE_CONN_MAX_AGE", default=60)
DATABASES["default"]["CONN_HEALTH_CHECKS"] = True
if DATABASES["default"]["ENGINE"] == "django.db.backends.mysql":
    DATABASES["default"].setdefault("OPTIONS", {}).update(
        {
            "charset": "utf8mb4",
            # Sales lock rows and read what they lock; READ COMMITTED keeps gap locks out of the way.
            "isolation_level": "read committed",
            # Fail fast rather than hang a web worker when the database is unreachable.
            "connect_timeout": 5,
        }
    )
    # ...or reachable and not answering (hung, or the network dropping packets): without these a query on a
    # pooled connection waits for ever, and gunicorn kills the worker at its 30 s timeout with no answer.
    # Each read or write of a query waits this long at most, then OperationalError (a 503 on the request
    # path, a transient error in factory tasks). 0: no limit (a `migrate` whose ALTER TABLE takes longer).
    DATABASE_READ_TIMEOUT_SECONDS = env.int("DATABASE_READ_TIMEOUT_SECONDS", default=10)
    if DATABASE_READ_TIMEOUT_SECONDS:
        DATABASES["default"]["OPTIONS"].update(
            {"read_timeout": DATABASE_READ_TIMEOUT_SECONDS, "write_timeout": DATABASE_READ_TIMEOUT_SECONDS}
        )
    DATABASES["default"]["TEST"] = {"CHARSET": "utf8mb4", "COLLATION": "utf8mb4_unicode_ci"}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # Several processes share the file in `make run`: wait for the write lock instead of failing, and
    # take it when a transaction starts so a read-then-write cannot deadlock on the upgrade.
    DATABASES["default"].setdefault("OPTIONS", {}).update(
        {"timeout": 20, "transaction_mode": "IMMEDIATE", "init_command": "PRAGMA journal_mode=WAL;"}
    )
# Services own their transactions (CONTRIBUTING.md, rule 2).
DATABASES["default"]["ATOMIC_REQUESTS"] = False

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = BASE_DIR / "staticfiles"

REDIS_URL = env.str("REDIS_URL", default="redis://127.0.0.1:6379/1")
CACHES = {
    "default": {
        "BACKEND": "django.core.cache.backends.redis.RedisCache",
        "LOCATION": REDIS_URL,
        "KEY_PREFIX": env.str("CACHE_KEY_PREFIX", default="donut"),
        "OPTIONS": {"socket_connect_timeout": 1, "socket_timeout": 1},
    }
}
# What a web request may wait on Redis (API throttle, sale counters) and on the broker (publishing after
# commit): one try each within this timeout; after a failure the dependency is skipped for the pause
# (donutsite/dependencies.py), failing open.
WEB_DEPENDENCY_TIMEOUT_SECONDS = env.float("WEB_DEPENDENCY_TIMEOUT_SECONDS", default=0.05)
WEB_DEPENDENCY_PAUSE_SECONDS = env.float("WEB_DEPENDENCY_PAUSE_SECONDS", default=5.0)

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": ["clients.auth.ApiKeyAuthentication"],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_THROTTLE_CLASSES": [
        "clients.throttles.ApiClientRateThrottle",
        "donutsite.ratelimit.AnonymousRateThrottle",
    ],
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "DEFAULT_PARSER_CLASSES": ["donutsite.parsers.JSONParser"],
    "DEFAULT_CONTENT_NEGOTIATION_CLASS": "donutsite.negotiation.ContentNegotiation",
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "EXCEPTION_HANDLER": "donutsite.drf.exception_handler",
    "DEFAULT_METADATA_CLASS": "donutsite.drf.MetadataWithoutActions",
    "UNAUTHENTICATED_USER": None,
    # Every time in one shape, microseconds included (isoformat() drops them when they are 0, and a time
    # the factory gives in whole seconds lost its fraction): one parser reads them all. UTC (TIME_ZONE).
    "DATETIME_FORMAT": "%Y-%m-%dT%H:%M:%S.%fZ",
}
if DEBUG:
    REST_FRAMEWORK["DEFAULT_RENDERER_CLASSES"].append("rest_framework.renderers.BrowsableAPIRenderer")

SPECTACULAR_SETTINGS = {
    "TITLE": "donut-states API",
    "DESCRIPTION": "Buy donuts; stock that runs short is reordered from the factory.",
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "COMPONENT_SPLIT_REQUEST": True,
    # Served from our own static files: the docs work without a CDN.
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    # Every error response gets example bodies, one per code (donutsite/openapi.py).
    "POSTPROCESSING_HOOKS": ["drf_spectacular.hooks.postprocess_schema_enums", "donutsite.openapi.error_examples"],
    # A restock's status is one enum wherever it appears (a restock, and the one an out_of_stock names);
    # without a name, two serializers sharing it got a made-up one ("Status785Enum").
    "ENUM_NAME_OVERRIDES": {"RestockOutStatusEnum": "inventory.models.Restock.Status"},
}

# How many reverse proxies of ours sit in front of gunicorn (production: the TLS proxy, 1). The client's
# address is then read from X-Forwarded-For that many hops from the right (donutsite/ratelimit.py); 0
# means REMOTE_ADDR is the client.
TRUSTED_PROXY_COUNT = env.int("DJANGO_TRUSTED_PROXY_COUNT", default=0)

# Admin logins: this many failures for one account from one client address within the window, then
# 429 for that pair until it passes (donutsite/login_throttle.py; `manage.py admin_login_unlock`). Flower's
# basic login takes the same limit per client address (donutsite/flower.py): one setting for both logins.
ADMIN_LOGIN_MAX_FAILURES = env.int("ADMIN_LOGIN_MAX_FAILURES", default=5)
ADMIN_LOGIN_WINDOW_SECONDS = env.int("ADMIN_LOGIN_WINDOW_SECONDS", default=900)
# An admin login (the only sessions there are) lasts a working shift, not Django's two weeks: it can set
# stock and redrive orders, and a browser left logged in should not hold that for a fortnight.
SESSION_COOKIE_AGE = env.int("ADMIN_SESSION_HOURS", default=12) * 3600

# /metrics (ops/metrics.py): a Bearer token, or client addresses/networks (REMOTE_ADDR only, never
# a proxy's own address). With neither set the endpoint answers 404.
METRICS_TOKEN = env.str("METRICS_TOKEN", default="")
METRICS_ALLOWED_IPS = env.list("METRICS_ALLOWED_IPS", default=[])
for _net in METRICS_ALLOWED_IPS:
    try:
        ipaddress.ip_network(_net, strict=False)
    except ValueError:
        raise ImproperlyConfigured(f"METRICS_ALLOWED_IPS: {_net!r} is not an address or network.") from None

# API clients: how fast one client may call us, and how long an Idempotency-Key is remembered.
API_THROTTLE_RATE = env.str("API_THROTTLE_RATE", default="200/second")
# Per client address (donutsite/ratelimit.py): requests without a key, and bad keys sent.
ANON_THROTTLE_RATE = env.str("ANON_THROTTLE_RATE", default="120/minute")
FAILED_AUTH_THROTTLE_RATE = env.str("FAILED_AUTH_THROTTLE_RATE", default="10/minute")
IDEMPOTENCY_KEY_TTL_HOURS = env.int("IDEMPOTENCY_KEY_TTL_HOURS", default=24)
if IDEMPOTENCY_KEY_TTL_HOURS < 24:
    raise ImproperlyConfigured("IDEMPOTENCY_KEY_TTL_HOURS must be at least 24.")

# The legacy factory (its API as we call it: factory/client.py) and how patiently we call it.
FACTORY_API_URL = env.str("FACTORY_API_URL", default="http://127.0.0.1:8081")
DEV_FACTORY_CALLBACK_SECRET = "dev-callback-secret"  # noqa: S105 - make run's and the simulator's, public
FACTORY_API_KEY = env.str("FACTORY_API_KEY", default="dev-factory-key" if DEBUG else "")
FACTORY_CALLBACK_SECRET = env.str("FACTORY_CALLBACK_SECRET", default=DEV_FACTORY_CALLBACK_SECRET if DEBUG else "")
if not (FACTORY_API_KEY and FACTORY_CALLBACK_SECRET):
    raise ImproperlyConfigured("FACTORY_API_KEY and FACTORY_CALLBACK_SECRET must be set outside development.")
if not DEBUG and FACTORY_CALLBACK_SECRET == DEV_FACTORY_CALLBACK_SECRET:
    # Anyone who reads this repository could sign callbacks, crediting donuts that never arrived.
    raise ImproperlyConfigured(
        "FACTORY_CALLBACK_SECRET is the development default, public in this repository: agree a secret of "
        "your own with the factory."
    )
# Refused (unsigned, forged, stale) callbacks: one alert per window, and an address refused this often
# in a window gets 429 until it ends (factory/refusals.py).
CALLBACK_REFUSAL_WINDOW_SECONDS = env.int("CALLBACK_REFUSAL_WINDOW_SECONDS", default=300)
CALLBACK_REFUSALS_PER_ADDRESS = env.int("CALLBACK_REFUSALS_PER_ADDRESS", default=20)
PUBLIC_BASE_URL = env.str("PUBLIC_BASE_URL", default="http://127.0.0.1:8000").rstrip("/")
# The factory refuses (400, never retried) an order whose callback_url is not an absolute http(s) URL.
_public = urlsplit(PUBLIC_BASE_URL)
if _public.scheme not in ("http", "https") or not _public.hostname:
    raise ImproperlyConfigured(f"PUBLIC_BASE_URL must be an absolute http or https URL, not {PUBLIC_BASE_URL!r}.")
FACTORY_REFERENCE_PREFIX = env.str("FACTORY_REFERENCE_PREFIX", default="restock")
# The factory's references are 1-64 characters of A-Z a-z 0-9 . _ : - and ours are "<prefix>-<restock id>",
# the id up to 19 digits: a prefix outside that gets every order refused (400), some only once ids grow.
if not re.fullmatch(r"[A-Za-z0-9._:-]{1,44}", FACTORY_REFERENCE_PREFIX):
    raise ImproperlyConfigured(
        "FACTORY_REFERENCE_PREFIX must be 1-44 characters of A-Z a-z 0-9 . _ : - (the factory's reference rules)."
    )
FACTORY_TIMEOUT_SECONDS = env.float("FACTORY_TIMEOUT_SECONDS", default=8.0)
FACTORY_CONNECT_TIMEOUT_SECONDS = min(3.0, FACTORY_TIMEOUT_SECONDS)
# Failed calls per restock before it is dead-lettered; a 429 (the factory asking us to wait) is not one.
FACTORY_MAX_ATTEMPTS = env.int("FACTORY_MAX_ATTEMPTS", default=6)
# ... and no sooner than this many seconds after the first of them: the factory answers 503 in bursts under
# load, longer than the budget's backoff (6-36 s seen), and a burst must not page ops. Below the overdue
# grace, so that a restock the factory keeps failing is mostly given up before it is told overdue (a warning
# raised first is closed by the dead letter).
FACTORY_RETRY_FOR_SECONDS = env.int("FACTORY_RETRY_FOR_SECONDS", default=90)
FACTORY_RETRY_BACKOFF_SECONDS = env.float("FACTORY_RETRY_BACKOFF_SECONDS", default=1.0)
FACTORY_RETRY_BACKOFF_MAX_SECONDS = env.float("FACTORY_RETRY_BACKOFF_MAX_SECONDS", default=15.0)
# A factory 429's Retry-After is obeyed up to this many seconds: a restock is never parked longer.
FACTORY_RETRY_AFTER_MAX_SECONDS = env.int("FACTORY_RETRY_AFTER_MAX_SECONDS", default=900)
FACTORY_OVERDUE_GRACE_SECONDS = env.int("FACTORY_OVERDUE_GRACE_SECONDS", default=120)
# A restock still pending this long after its message should have run is sent again (the outbox relay).
OUTBOX_RESEND_AFTER_SECONDS = env.int("OUTBOX_RESEND_AFTER_SECONDS", default=60)

# Celery (the app is in donutsite/celery.py). Every queue is declared so Flower shows its length. A
# worker started without -Q would consume them all, the dead-letter queue (copies for ops to see)
# included: make run and docker-compose.yml start each worker with -Q naming its own queues.
CELERY_BROKER_URL = env.str("CELERY_BROKER_URL", default="redis://127.0.0.1:6379/0")
CELERY_TASK_DEFAULT_QUEUE = "default"
CELERY_TASK_QUEUES_NAMES = ["default", "factory_urgent", "factory", "notifications", "maintenance", "dead_letter"]
# The one place a task's queue is declared (tasks and senders carry no queue= of their own). Exact
# names win over patterns: the factory's sweep must not wait behind the factory calls it is there to
# rescue. A restock opened by a shortage is sent the first time under the route name SHORTAGE_ROUTE
# (send_task's route_name; the task is still factory.restock_place) to `factory_urgent`, which a worker
# of its own serves, so it never waits behind a backlog of routine restocks; its retries, and every
# other restock, poll, sweep resend and redrive, take the plain task name to `factory`
# (docs/benchmarks.md, "Restock latency").
SHORTAGE_ROUTE = "factory.restock_place:shortage"
CELERY_TASK_ROUTES = {
    SHORTAGE_ROUTE: {"queue": "factory_urgent"},
    "factory.reconcile": {"queue": "maintenance"},
    "factory.dead_letter_copies_sync": {"queue": "maintenance"},
    "inventory.*": {"queue": "maintenance"},
    "factory.*": {"queue": "factory"},
    "notifications.*": {"queue": "notifications"},
    "maintenance.*": {"queue": "maintenance"},
}
CELERY_TASK_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_RESULT_BACKEND = None  # tasks record their outcome in the database; nobody waits on results
CELERY_TASK_IGNORE_RESULT = True
# Ack after the task ran, and give the message back if the worker process died mid-task: tasks change
# state, so a crash must mean "run again", never "lost". Every task is idempotent for that reason.
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
# Factory calls are slow I/O: a worker takes one message at a time so others can pick up the rest.
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
# Time limits, ordered: factory HTTP timeout < soft limit < hard limit < visibility timeout. A task
# that outlives the visibility timeout would be handed to a second worker; donutsite/checks.py refuses
# settings that break the order (and a retry countdown + hard limit must fit inside it too).
CELERY_TASK_SOFT_TIME_LIMIT = env.int("CELERY_TASK_SOFT_TIME_LIMIT", default=12)
CELERY_TASK_TIME_LIMIT = env.int("CELERY_TASK_TIME_LIMIT", default=15)
CELERY_VISIBILITY_TIMEOUT = env.int("CELERY_VISIBILITY_TIMEOUT", default=35)
CELERY_BROKER_TRANSPORT_OPTIONS = {
    "visibility_timeout": CELERY_VISIBILITY_TIMEOUT,
    # kombu sweeps unacked messages every interval*throttle seconds (100 s by default); 5 s means a
    # task whose whole worker was killed runs again about visibility + 5 s later.
    "unacked_restore_interval": 5,
    "unacked_restore_throttle": 1,
    # A sale must never hang because Redis is down: publishing fails fast and the outbox sweep re-sends.
    "socket_connect_timeout": 2,
    "socket_timeout": 5,
}
CELERY_RESULT_BACKEND_TRANSPORT_OPTIONS = {"visibility_timeout": CELERY_VISIBILITY_TIMEOUT}
CELERY_TASK_PUBLISH_RETRY = False
# donutsite.celery.task_publish (after-commit sends backed by a row that a sweep resends): one try, this
# long at most, whatever state the broker is in (a publish to a healthy Redis takes about 1 ms; one that
# times out is resent by the reconcile or notifications sweep within seconds).
BROKER_PUBLISH_TIMEOUT_SECONDS = env.float("BROKER_PUBLISH_TIMEOUT_SECONDS", default=0.1)
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
# A task running when the broker connection drops runs to its end; its ack is lost, so the broker hands the
# message out again and the task finds its work done (every task is idempotent). Cancelling it instead
# killed a prefork child in the middle of a Slack or FCM send that had already reached them: the delivery
# was never marked sent, and the sweep posted it a second time. (The threads pool cannot cancel at all.)
CELERY_WORKER_CANCEL_LONG_RUNNING_TASKS_ON_CONNECTION_LOSS = False
RECONCILE_INTERVAL_SECONDS = env.float("RECONCILE_INTERVAL_SECONDS", default=5.0)
CELERY_BEAT_SCHEDULE = {
    "reconcile": {
        "task": "factory.reconcile",
        "schedule": RECONCILE_INTERVAL_SECONDS,
        "options": {"expires": RECONCILE_INTERVAL_SECONDS * 2},
    },
    # Keys live at least IDEMPOTENCY_KEY_TTL_HOURS; a purge a few minutes late changes nothing.
    "idempotency-keys-purge": {
        "task": "inventory.idempotency_keys_purge",
        "schedule": 300.0,
        "options": {"expires": 600.0},
    },
    # Copies in the dead-letter queue for Flower, matched to the rows (factory.retries.dead_letter_copies_sync).
    "dead-letter-copies-sync": {
        "task": "factory.dead_letter_copies_sync",
        "schedule": 60.0,
        "options": {"expires": 120.0},
    },
    "notifications-sweep": {
        "task": "notifications.sweep",
        "schedule": RECONCILE_INTERVAL_SECONDS,
        "options": {"expires": RECONCILE_INTERVAL_SECONDS * 2},
    },
}

# Alerts for ops (see the README's table). A channel with no configuration is skipped.
SLACK_WEBHOOK_URL = env.str("SLACK_WEBHOOK_URL", default="")
FCM_ENDPOINT = env.str("FCM_ENDPOINT", default="https://fcm.googleapis.com").rstrip("/")
FCM_PROJECT_ID = env.str("FCM_PROJECT_ID", default="")
FCM_CREDENTIALS_FILE = env.str("FCM_CREDENTIALS_FILE", default="")
FCM_ACCESS_TOKEN = env.str("FCM_ACCESS_TOKEN", default="")
FCM_OPS_TOPIC = env.str("FCM_OPS_TOPIC", default="ops-alerts")
SLACK_MIN_SEVERITY = env.str("SLACK_MIN_SEVERITY", default="info")
# How long one call to Slack or FCM may wait to connect and for each read. A send (Slack: with its one
# retry) must end before the notification tasks' soft time limit: notifications/checks.py.
SLACK_TIMEOUT_SECONDS = env.float("SLACK_TIMEOUT_SECONDS", default=3.0)
FCM_TIMEOUT_SECONDS = env.float("FCM_TIMEOUT_SECONDS", default=5.0)
FCM_MIN_SEVERITY = env.str("FCM_MIN_SEVERITY", default="critical")
ALERT_GROUP_WINDOW_SECONDS = env.int("ALERT_GROUP_WINDOW_SECONDS", default=300)
# A critical alert held back by grouping that names something new (a SKU) goes out in a summary this soon
# (plus one sweep interval), not at the window's end.
ALERT_CRITICAL_FLUSH_SECONDS = env.int("ALERT_CRITICAL_FLUSH_SECONDS", default=30)
ALERT_ESCALATE_AFTER_SECONDS = env.int("ALERT_ESCALATE_AFTER_SECONDS", default=900)
# e.g. sold_out; a name that is no alert kind would switch nothing off: notifications/checks.py refuses it.
ALERTS_DISABLED_KINDS = env.list("ALERTS_DISABLED_KINDS", default=[])
FACTORY_FAILURE_STREAK_ALERT = env.int("FACTORY_FAILURE_STREAK_ALERT", default=5)
# Notification deliveries retry with Celery's exponential backoff and full jitter (its countdowns, like the
# factory's, stay under the visibility timeout: donutsite/checks.py).
NOTIFICATIONS_MAX_RETRIES = env.int("NOTIFICATIONS_MAX_RETRIES", default=5)
NOTIFICATIONS_RETRY_BACKOFF_SECONDS = env.int("NOTIFICATIONS_RETRY_BACKOFF_SECONDS", default=1)
NOTIFICATIONS_RETRY_BACKOFF_MAX_SECONDS = env.int("NOTIFICATIONS_RETRY_BACKOFF_MAX_SECONDS", default=15)
# A delivery or back-in-stock push whose message never left (or whose send failed) is sent again by the
# notifications sweep this long after it was due.
NOTIFICATIONS_RESEND_AFTER_SECONDS = env.int("NOTIFICATIONS_RESEND_AFTER_SECONDS", default=30)
# A delivery Slack or FCM keeps failing transiently is sent again by the sweep until its alert is this old.
NOTIFICATIONS_GIVE_UP_AFTER_SECONDS = env.int("NOTIFICATIONS_GIVE_UP_AFTER_SECONDS", default=86400)
FLOWER_URL = env.str("FLOWER_URL", default="http://127.0.0.1:5555" if DEBUG else "")
# Each channel's lowest severity, found by its name so that a new channel's is checked too: the registry
# ranks it in the transaction of every alert's event, where a bad value would fail that event (the sale
# taking the last donut) instead of the start.
for _name in [name for name in globals() if name.endswith("_MIN_SEVERITY")]:
    if globals()[_name] not in ("info", "warning", "critical"):
        raise ImproperlyConfigured(f"{_name} must be info, warning or critical.")

# JSON lines in production, readable lines in development; both carry the request id (donutsite/logging.py).
# Celery workers and beat log through this too (donutsite/celery.py).
LOG_FORMAT = env.str("LOG_FORMAT", default="plain" if DEBUG else "json")
if LOG_FORMAT not in ("json", "plain"):
    raise ImproperlyConfigured("LOG_FORMAT must be json or plain.")
# Django's refusals of a request it finds suspicious, each answered 400 and logged at ERROR with a traceback
# on django.security.<name>: each is caused by what the request says, not by a fault of ours. A Host we do not
# serve (a scan, a misdirected client); an admin URL tampered with (`?_to_field=password`, a lookup the
# changelist does not offer such as `?password__startswith=`, a `__regex` we refuse); a form of more than
# DATA_UPLOAD_MAX_NUMBER_FIELDS fields or DATA_UPLOAD_MAX_NUMBER_FILES files, which anyone can post to the
# login page. Each is one warning line (donutsite.logging.SuspiciousRequestFilter).
SUSPICIOUS_REQUEST_LOGGERS = [
    "django.security.DisallowedHost",
    "django.security.DisallowedModelAdminToField",
    "django.security.DisallowedModelAdminLookup",
    "django.security.TooManyFieldsSent",
    "django.security.TooManyFilesSent",
]

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "filters": {
        "request_id": {"()": "donutsite.logging.RequestIdFilter"},
        "quiet_routine": {"()": "donutsite.logging.QuietRoutineFilter"},
        "suspicious_request": {"()": "donutsite.logging.SuspiciousRequestFilter"},
        "beat_broker_away": {"()": "donutsite.logging.BeatBrokerAwayFilter"},
        "permission_denied": {"()": "donutsite.logging.PermissionDeniedFilter"},
    },
    "formatters": {
        "plain": {"format": "%(asctime)s %(levelname)s %(name)s [%(request_id)s] %(message)s"},
        "json": {"()": "donutsite.logging.JsonFormatter"},
    },
    "handlers": {
        "console": {
            "class": "logging.StreamHandler",
            "formatter": LOG_FORMAT,
            "filters": ["request_id", "quiet_routine"],
        },
    },
    "root": {"handlers": ["console"], "level": env.str("LOG_LEVEL", default="INFO")},
    "loggers": {
        "django.db.backends": {"level": "WARNING"},
        # Django's own default config gives "django" a console handler in DEBUG; its records also reach
        # ours through the root, so every django.request warning was printed twice.
        "django": {"handlers": [], "level": "INFO", "propagate": True},
        "django.request": {"filters": ["permission_denied"]},
        "celery.beat": {"filters": ["beat_broker_away"]},
        **{name: {"filters": ["suspicious_request"]} for name in SUSPICIOUS_REQUEST_LOGGERS},
    },
}

# Error tracking (donutsite/sentry.py): off unless SENTRY_DSN is set.
SENTRY_DSN = env.str("SENTRY_DSN", default="")
SENTRY_ENABLED = False
if SENTRY_DSN:
    # Imported only when used: the benches' settings (bench/settings.py) run this file before the
    # donutsite package can be imported, and importing it from here would start Celery half configured.
    from donutsite.sentry import sentry_init

    SENTRY_ENABLED = sentry_init(
        dsn=SENTRY_DSN,
        environment=env.str("SENTRY_ENVIRONMENT", default="development" if DEBUG else "production"),
        release=env.str("SENTRY_RELEASE", default=""),
        traces_sample_rate=env.float("SENTRY_TRACES_SAMPLE_RATE", default=0.0),
    )

# Production hardening: `manage.py check --deploy` must report nothing with DJANGO_DEBUG unset.
if not DEBUG:
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    SECURE_SSL_REDIRECT = env.bool("DJANGO_SECURE_SSL_REDIRECT", default=True)
    # Probes and scrapers reach gunicorn directly on the private network, in plain HTTP; /metrics is also
    # guarded by its token or address list (ops/metrics.py).
    SECURE_REDIRECT_EXEMPT = [r"^healthz$", r"^readyz$", r"^metrics$"]
    SESSION_COOKIE_SECURE = True
    CSRF_COOKIE_SECURE = True
    SECURE_HSTS_SECONDS = env.int("DJANGO_SECURE_HSTS_SECONDS", default=31536000)
    SECURE_HSTS_INCLUDE_SUBDOMAINS = True
    SECURE_HSTS_PRELOAD = True
