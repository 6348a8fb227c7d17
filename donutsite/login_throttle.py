"""Rate limit for admin logins: after ADMIN_LOGIN_MAX_FAILURES failures from one address within
ADMIN_LOGIN_WINDOW_SECONDS, further login attempts from it get 429 until the window passes.

Counted in the shared cache (Redis), so every web process sees the same count. If the cache is down,
logins are not throttled (the password check itself still applies).
"""

import logging

from django.conf import settings
from django.contrib.auth.signals import user_logged_in, user_login_failed
from django.core.cache import cache
from django.dispatch import receiver
from django.http import HttpResponse

logger = logging.getLogger(__name__)


def _key(request) -> str:
    return f"admin-login-failures:{request.META.get('REMOTE_ADDR', '?')}"


def failures(request) -> int:
    try:
        return cache.get(_key(request), 0)
    except Exception:  # the cache is down: do not lock everyone out
        return 0


@receiver(user_login_failed)
def count_failure(sender, credentials=None, request=None, **kwargs):
    if request is None:
        return
    try:
        cache.add(_key(request), 0, settings.ADMIN_LOGIN_WINDOW_SECONDS)
        count = cache.incr(_key(request))
    except Exception:
        return
    if count == settings.ADMIN_LOGIN_MAX_FAILURES:
        logger.warning("admin login: %s failed logins from %s; throttled", count, request.META.get("REMOTE_ADDR"))


@receiver(user_logged_in)
def forget_failures(sender, request=None, **kwargs):
    if request is not None:
        try:
            cache.delete(_key(request))
        except Exception as exc:
            logger.warning("admin login: could not reset the failure count (%r)", exc)


class AdminLoginThrottleMiddleware:
    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        if (
            request.method == "POST"
            and request.path.rstrip("/").endswith("/admin/login")
            and failures(request) >= settings.ADMIN_LOGIN_MAX_FAILURES
        ):
            response = HttpResponse(
                "Too many failed logins from your address. Try again later.", status=429, content_type="text/plain"
            )
            response["Retry-After"] = str(settings.ADMIN_LOGIN_WINDOW_SECONDS)
            return response
        return self.get_response(request)
