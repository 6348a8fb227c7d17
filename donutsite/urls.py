from django.contrib import admin
from django.urls import include, path
from drf_spectacular.views import SpectacularSwaggerSplitView

from donutsite.health import healthz, readyz
from donutsite.openapi import SchemaView
from factory import views as factory_views
from inventory import views as inventory_views
from notifications import views as notification_views
from ops import metrics

# What ops see at the top of every admin page and in the browser tab.
admin.site.site_header = admin.site.site_title = "Donut-States ops"

api_v1 = [
    path("api/v1/sales/", inventory_views.SaleCreateView.as_view(), name="sale-create"),
    path("api/v1/sales/<int:sale_id>/", inventory_views.SaleDetailView.as_view(), name="sale-detail"),
    path("api/v1/products/", inventory_views.ProductListView.as_view(), name="product-list"),
    path("api/v1/products/<str:sku>/", inventory_views.ProductDetailView.as_view(), name="product-detail"),
    path(
        "api/v1/products/<str:sku>/subscriptions/",
        inventory_views.ProductSubscribeView.as_view(),
        name="product-subscribe",
    ),
    path(
        "api/v1/products/<str:sku>/subscriptions/<int:device_id>/",
        inventory_views.ProductUnsubscribeView.as_view(),
        name="product-unsubscribe",
    ),
    path("api/v1/devices/", notification_views.DeviceRegisterView.as_view(), name="device-register"),
    path(
        "api/v1/devices/<int:device_id>/", notification_views.DeviceUnregisterView.as_view(), name="device-unregister"
    ),
    path("api/v1/restocks/", inventory_views.RestockListView.as_view(), name="restock-list"),
    path("api/v1/restocks/<int:restock_id>/", inventory_views.RestockDetailView.as_view(), name="restock-detail"),
    path("api/v1/factory/callbacks/", factory_views.FactoryCallbackView.as_view(), name="factory-callback"),
]

urlpatterns = [
    path("healthz", healthz, name="healthz"),  # probes: no auth, no SSL redirect, JSON
    path("readyz", readyz, name="readyz"),
    *api_v1,
    path("api/schema/", SchemaView.as_view(authentication_classes=[], permission_classes=[]), name="schema"),
    path(
        "api/docs/",
        # GET only: its HTML renderer has no page for an OPTIONS answer (a 500); other methods are 405.
        # The split view: Swagger UI's start-up script comes from this URL (?script), not inline in the page,
        # so the Content-Security-Policy (donutsite/csp.py) runs no inline script.
        SpectacularSwaggerSplitView.as_view(
            url_name="schema", authentication_classes=[], permission_classes=[], http_method_names=["get", "head"]
        ),
        name="docs",
    ),
    path("admin/dashboard/", include("ops.dashboard")),  # before admin/, which would claim it
    path("admin/", admin.site.urls),
    path("metrics", metrics.metrics_view, name="metrics"),
]

handler404 = "donutsite.views.not_found"  # JSON under /api/, like every other API error
