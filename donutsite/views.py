"""Project-wide error pages: under /api/ they speak the API's one JSON error shape, not Django's HTML."""

from django.http import JsonResponse
from django.views import defaults

from donutsite.drf import error_body
from donutsite.middleware import api_path


def not_found(request, exception=None):
    """A URL no route matches (e.g. `/api/v1/sales/abc/`): JSON for API clients, the HTML page elsewhere."""
    if api_path(request.path):
        return JsonResponse(error_body("not_found", "Not found."), status=404)
    return defaults.page_not_found(request, exception)
