"""The app's URLs plus one bare JSON view: the floor that Django and gunicorn cost on their own."""

from django.http import JsonResponse
from django.urls import path

from donutsite.urls import urlpatterns as app_urlpatterns


def bare(request):
    return JsonResponse({"ok": True})


urlpatterns = [path("bench/bare/", bare, name="bench-bare"), *app_urlpatterns]
