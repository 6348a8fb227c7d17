"""Who is asking (the client's address behind our trusted proxies) and counters of what they did,
kept in Redis so every web process shares them.

`client_address`: REMOTE_ADDR is the TLS proxy in production, the same for everyone. With
DJANGO_TRUSTED_PROXY_COUNT=N, the address is the N-th X-Forwarded-For entry from the right: each
trusted proxy appends the address it saw, so that entry was written by our outermost proxy and the
ones left of it by whoever sent the request (anything). Without the setting, REMOTE_ADDR. An IPv6
client is counted by its /64, the block one subscriber is given (holding one, an attacker could
otherwise take a fresh address for every request), and an IPv4-mapped IPv6 address as the IPv4 one.

Counters are fixed windows that start with their first hit (SET NX EX, then INCR). They are on the
request path, so they take Redis as donutsite/dependencies.py gives it to a request: one try within
WEB_DEPENDENCY_TIMEOUT_SECONDS, then the "redis" circuit breaker skips Redis for the pause. They fail
open: with Redis refused, hung or slow nothing is counted or refused, and the caller's own checks
(passwords, keys, signatures) still apply.
"""

import ipaddress

import redis
from django.conf import settings
from rest_framework import exceptions
from rest_framework.throttling import BaseThrottle, SimpleRateThrottle

from donutsite.dependencies import redis_client, redis_try

# What a request that came with no REMOTE_ADDR (a unix socket's peer) is counted, and logged, under: one
# bucket for all of them, which admin_login_unlock --address takes by this name.
UNKNOWN_ADDRESS = "unknown"


def client_address(request) -> str:
    hops = settings.TRUSTED_PROXY_COUNT
    if hops:
        forwarded = [part.strip() for part in request.META.get("HTTP_X_FORWARDED_FOR", "").split(",")]
        forwarded = [part for part in forwarded if part]
        if len(forwarded) >= hops:
            try:
                return address_counted(str(ipaddress.ip_address(forwarded[-hops])))
            except ValueError:
                pass  # not an address: our proxy did not write it; count it as the proxy's
    return address_counted(request.META.get("REMOTE_ADDR") or UNKNOWN_ADDRESS)


def address_counted(address: str) -> str:
    """The name an address is counted under: itself, an IPv6 address's /64, a mapped IPv4 address."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return address
    if ip.version == 6 and ip.ipv4_mapped:
        return str(ip.ipv4_mapped)
    if ip.version == 6:
        return str(ipaddress.ip_network(f"{ip}/64", strict=False))
    return str(ip)


def _key(name: str) -> str:
    return f"{settings.CACHES['default']['KEY_PREFIX']}:limit:{name}"


def _on_request_path(commands, default):
    """What `commands(client)` returns, or `default` when Redis fails or its breaker is open."""
    return redis_try(lambda: commands(redis_client(settings.REDIS_URL)), default)


def hit(name: str, window: int) -> tuple[int, int]:
    """Count one more in `name`'s window; return (count, seconds until the window ends). (0, 0) when
    Redis does not answer. The count is kept `window` seconds from its first hit."""
    key = _key(name)

    def commands(client):
        pipe = client.pipeline(transaction=True)
        pipe.set(key, 0, ex=window, nx=True)
        pipe.incr(key)
        pipe.ttl(key)
        _, count, ttl = pipe.execute()
        return count, max(ttl, 1)

    return _on_request_path(commands, (0, 0))


def count(name: str) -> tuple[int, int]:
    """(count, seconds until the window ends) of `name` without counting; (0, 0) if none or Redis is down."""
    key = _key(name)

    def commands(client):
        pipe = client.pipeline(transaction=False)
        pipe.get(key)
        pipe.ttl(key)
        value, ttl = pipe.execute()
        return int(value or 0), max(ttl, 1)

    return _on_request_path(commands, (0, 0))


def forget(name: str) -> None:
    _on_request_path(lambda client: client.delete(_key(name)), None)


def forget_matching(pattern: str) -> list[str]:
    """Delete every counter whose name matches the glob `pattern`; return the names deleted. For ops'
    commands: Redis's usual timeouts, and an error if it does not answer."""
    client = redis.Redis.from_url(settings.REDIS_URL)
    prefix = _key("")
    keys = list(client.scan_iter(match=_key(pattern), count=1000))
    if keys:
        client.delete(*keys)
    return sorted(key.decode()[len(prefix) :] for key in keys)


def _rate(setting: str) -> tuple[int, int]:
    return SimpleRateThrottle.parse_rate(None, getattr(settings, setting))


class AnonymousRateThrottle(BaseThrottle):
    """ANON_THROTTLE_RATE per client address for requests without an API key (the public catalogue,
    the schema); requests with a key are ApiClientRateThrottle's."""

    def __init__(self):
        self.wait_seconds = None

    def allow_request(self, request, view):
        if request.auth is not None:
            return True
        limit, window = _rate("ANON_THROTTLE_RATE")
        count, self.wait_seconds = hit(f"anon:{client_address(request)}", window)
        return count <= limit

    def wait(self):
        return self.wait_seconds


def failed_auth_check(request) -> None:
    """Raise Throttled while the request's address is over FAILED_AUTH_THROTTLE_RATE bad credentials: a
    guesser of /metrics tokens (checked before the comparison) or of API keys (checked once the key is
    found unknown, so that a good key is never locked out) gets 429, and its noise is bounded."""
    limit, _ = _rate("FAILED_AUTH_THROTTLE_RATE")
    failures, wait = count(f"auth-failed:{client_address(request)}")
    if failures >= limit:
        raise exceptions.Throttled(wait, detail="Too many failed authentications from your address.")


def failed_auth_count(request) -> None:
    _, window = _rate("FAILED_AUTH_THROTTLE_RATE")
    hit(f"auth-failed:{client_address(request)}", window)
