"""`Authorization: Api-Key <key>` authentication for client apps."""

import time

from drf_spectacular.extensions import OpenApiAuthenticationExtension
from rest_framework import authentication, exceptions

from clients.models import ApiClient
from donutsite import ratelimit

# Keys are looked up on every request; a short in-process cache saves a query per sale.
# Deactivating a client therefore takes effect within CACHE_SECONDS.
CACHE_SECONDS = 10.0
_cache: dict[str, tuple[float, ApiClient]] = {}


def api_client_for_key(key: str) -> ApiClient | None:
    """The active client of `key`, from the cache or the database (looked up again when its entry expires,
    so a revocation takes effect within CACHE_SECONDS)."""
    key_hash = ApiClient.hash_key(key)
    now = time.monotonic()
    if (cached := _cached(key_hash, now)) is not None:
        return cached
    client = ApiClient.objects.filter(key_hash=key_hash, is_active=True).first()
    if client is None:
        _cache.pop(key_hash, None)
        return None
    if len(_cache) > 10_000:
        _cache.clear()
    _cache[key_hash] = (now + CACHE_SECONDS, client)
    return client


def api_client_cached(request) -> ApiClient | None:
    """The client of the request's `Authorization: Api-Key <key>` if this process has it cached, else
    None: no database, no Redis, nothing counted. What ApiKeyAuthentication would authenticate with no
    work at all (inventory.views.SaleCreateView's plain POST); on None, it decides."""
    key = _api_key(request.headers.get("Authorization", ""))
    return _cached(ApiClient.hash_key(key), time.monotonic()) if key else None


def _cached(key_hash: str, now: float) -> ApiClient | None:
    hit = _cache.get(key_hash)
    return hit[1] if hit and hit[0] > now else None


def _api_key(header: str) -> str:
    """The key of an `Api-Key <key>` header (the scheme is case-insensitive, RFC 9110); "" if none."""
    keyword, _, key = header.partition(" ")
    return key.strip() if keyword.lower() == ApiKeyAuthentication.keyword.lower() else ""


class ApiKeyAuthentication(authentication.BaseAuthentication):
    keyword = "Api-Key"

    def authenticate(self, request):
        header = authentication.get_authorization_header(request).decode("latin-1")
        if not header:
            return None
        key = _api_key(header)
        if not key:
            ratelimit.failed_auth_check(request)
            ratelimit.failed_auth_count(request)
            raise exceptions.AuthenticationFailed("Send `Authorization: Api-Key <key>`.")
        client = api_client_for_key(key)
        if client is None:
            # 429 while this address keeps sending bad keys; a good key is never locked out, even by a guesser
            # sharing its address (a carrier NAT), and costs no Redis round trip. A key has 256 random bits:
            # the limit is not what keeps it from being guessed.
            ratelimit.failed_auth_check(request)
            ratelimit.failed_auth_count(request)
            raise exceptions.AuthenticationFailed("Unknown or revoked API key.")
        # The client stands in for a user: DRF's IsAuthenticated checks `request.user.is_authenticated`.
        return (ClientUser(client), client)

    def authenticate_header(self, request):
        return self.keyword


class ClientUser:
    """The request's `user` for an API client; the client itself is `request.auth`."""

    is_authenticated = True
    is_anonymous = False
    is_active = True

    def __init__(self, client: ApiClient):
        self.client = client
        self.pk = client.pk

    def __str__(self):
        return self.client.name


class ApiKeyScheme(OpenApiAuthenticationExtension):
    target_class = "clients.auth.ApiKeyAuthentication"
    name = "ApiKey"

    def get_security_definition(self, auto_schema):
        return {
            "type": "apiKey",
            "in": "header",
            "name": "Authorization",
            "description": "`Api-Key <key>`; create one with `manage.py create_api_key NAME`.",
        }
