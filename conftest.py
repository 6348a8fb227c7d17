import pytest

from inventory.tests.helpers import make_api_client


def pytest_configure(config):
    from django.conf import settings

    engine = settings.DATABASES["default"]["ENGINE"]
    if engine != "django.db.backends.mysql":
        raise pytest.UsageError(
            f"Tests need MariaDB/MySQL (row locks do nothing on {engine}); run `make test` or set DATABASE_URL."
        )


@pytest.fixture
def api_client_and_key(db):
    return make_api_client()


@pytest.fixture
def client_app(api_client_and_key):
    """A DRF test client authenticated as an API client."""
    from rest_framework.test import APIClient

    client, key = api_client_and_key
    http = APIClient()
    http.credentials(HTTP_AUTHORIZATION=f"Api-Key {key}")
    http.api_client = client
    return http


@pytest.fixture(autouse=True)
def _fresh_caches():
    """Per-process caches (SKU ids, API keys, throttle tokens) must not leak between tests whose rows
    were rolled back."""
    from clients import auth, throttles
    from inventory import selectors

    selectors.forget_product_ids()
    auth._cache.clear()
    throttles._batches.clear()
    yield
