"""The app's URLs plus one bare JSON view (the floor that Django and gunicorn cost on their own) and the
other designs of the sale that `bench/sales.py --floors` compares (bench/floors.py)."""

from django.http import JsonResponse
from django.urls import path

from bench import floors
from donutsite.urls import urlpatterns as app_urlpatterns


def bare(request):
    return JsonResponse({"ok": True})


urlpatterns = [
    path("bench/bare/", bare, name="bench-bare"),
    path("bench/floor/drf/", floors.DrfFloor.as_view()),
    path("bench/floor/sql/", floors.sql_sale),
    path("bench/floor/proc/", floors.ProcedureSale.as_view()),
    path("bench/floor/refuse-view/", floors.refuse_view),
    path("bench/floor/refuse-drf/", floors.RefuseDrf.as_view()),
    *app_urlpatterns,
]
