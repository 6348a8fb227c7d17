"""Deploy check (`manage.py check --deploy`): the factory's callbacks must be answered 2xx.

The factory posts each callback to the callback_url of its order, built from PUBLIC_BASE_URL, and takes
any other answer as a failed delivery: it retries for about an hour, then the callback is lost and the
restock waits for the overdue poll. A host we do not serve is answered 400 and a plain-HTTP URL behind
the HTTPS redirect 301 (the factory follows no redirect), so every callback would be lost that way.
"""

from urllib.parse import urlsplit

from django.conf import settings
from django.core import checks
from django.http.request import split_domain_port, validate_host


def callback_url_problems() -> list[str]:
    url = urlsplit(settings.PUBLIC_BASE_URL)
    # The host as Django checks a request's Host header: an IPv6 address keeps its brackets, a trailing
    # dot goes (urlsplit's hostname does the opposite of both).
    host, _ = split_domain_port(url.netloc.rpartition("@")[2])
    problems = []
    if not validate_host(host, settings.ALLOWED_HOSTS):
        problems.append(
            f"PUBLIC_BASE_URL's host {host!r} is not in DJANGO_ALLOWED_HOSTS: every factory callback "
            "would be answered 400 and lost"
        )
    if url.scheme == "http" and settings.SECURE_SSL_REDIRECT:
        problems.append(
            "PUBLIC_BASE_URL is http while DJANGO_SECURE_SSL_REDIRECT is on: every factory callback would be "
            "answered 301, which the factory does not follow, and lost"
        )
    return problems


@checks.register(checks.Tags.security, deploy=True)
def check_callback_url(app_configs=None, **kwargs):
    return [checks.Warning(problem, id="factory.W001") for problem in callback_url_problems()]
