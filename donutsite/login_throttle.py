"""Admin login lockout: ADMIN_LOGIN_MAX_FAILURES failed logins for one account from one client address
within ADMIN_LOGIN_WINDOW_SECONDS, then that account from that address gets 429 until the window ends.

Keyed on the account and the real client address (donutsite.ratelimit.client_address, which reads
X-Forwarded-For only as far as DJANGO_TRUSTED_PROXY_COUNT trusted proxies), so someone guessing
passwords locks out only themselves: the same account from another address, and other accounts from
theirs, still log in. Ops lift a lockout with `manage.py admin_login_unlock`. Counted in Redis
(shared by every web process); with Redis down logins are not throttled.
"""

import hashlib
import logging

from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.forms import UsernameField
from django.contrib.auth.signals import user_logged_in, user_login_failed
from django.dispatch import receiver
from django.http import HttpResponse

from donutsite import ratelimit

logger = logging.getLogger(__name__)


def account_tag(username: str) -> str:
    """A short, key-safe stand-in for the account a login names, so that every spelling that reaches one
    account counts against that account: the login form strips the name and NFKC-normalises it, and the
    database's collation may ignore case, accents and trailing spaces (MariaDB's does). So the name is
    normalised as the form does and looked up as the login does (then without case); an account found
    is keyed by its id, a name that finds none by itself, case-folded."""
    name = UsernameField().to_python(username or "")
    user_model = get_user_model()
    manager = user_model._default_manager
    try:
        account = manager.get_by_natural_key(name).pk
    except user_model.DoesNotExist:
        found = list(manager.filter(**{f"{user_model.USERNAME_FIELD}__iexact": name}).values_list("pk", flat=True)[:2])
        account = found[0] if len(found) == 1 else None
    tag = f"id:{account}" if account is not None else f"name:{name.casefold()}"
    return hashlib.sha256(tag.encode()).hexdigest()[:16]


def counter_name(username: str, address: str) -> str:
    return f"admin-login:{account_tag(username)}:{address}"


@receiver(user_login_failed)
def count_failure(sender, credentials=None, request=None, **kwargs):
    if request is None:
        return
    username = (credentials or {}).get("username", "")
    address = ratelimit.client_address(request)
    failures, _ = ratelimit.hit(counter_name(username, address), settings.ADMIN_LOGIN_WINDOW_SECONDS)
    if failures == settings.ADMIN_LOGIN_MAX_FAILURES:
        logger.warning("admin login: %s failed logins for %r from %s; locked", failures, username[:150], address)


@receiver(user_logged_in)
def forget_failures(sender, request=None, user=None, **kwargs):
    if request is not None and user is not None:
        ratelimit.forget(counter_name(user.get_username(), ratelimit.client_address(request)))


class AdminLoginThrottleMiddleware:
    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        if request.method == "POST" and request.path.rstrip("/").endswith("/admin/login"):
            name = counter_name(request.POST.get("username", ""), ratelimit.client_address(request))
            failures, wait = ratelimit.count(name)
            if failures >= settings.ADMIN_LOGIN_MAX_FAILURES:
                response = HttpResponse(
                    "Too many failed logins for this account from your address. Try again in "
                    f"{max(1, -(-wait // 60))} minute(s), or ask another admin to run "
                    "`manage.py admin_login_unlock <username>`.",
                    status=429,
                    content_type="text/plain",
                )
                response["Retry-After"] = str(wait)
                return response
        return self.get_response(request)
