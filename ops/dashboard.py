"""The ops dashboard in the admin, at /admin/dashboard/: stock levels, open restocks, dead letters with
"Redrive all", recent alerts, and three charts drawn as inline SVG on the server (ops/charts.py),
so the page needs no JavaScript and nothing from the internet.

Staff only: both views are wrapped in admin.site.admin_view, which sends anyone else to the admin login.
The page also needs the view permissions of everything it shows (VIEW_PERMISSIONS: products, restocks,
dead letters, alerts, sales), so being staff alone shows nothing; redriving needs the permission to
change dead letters, as in the dead-letter admin.
"""

from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.shortcuts import redirect
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils import timezone
from django.utils.safestring import mark_safe
from django.views.decorators.http import require_GET, require_POST

from factory.models import DeadLetter
from factory.redrive import Redrive
from inventory.models import Restock
from ops import charts, selectors

VIEW_PERMISSIONS = (
    "inventory.view_product",
    "inventory.view_restock",
    "inventory.view_sale",
    "factory.view_deadletter",
    "notifications.view_alert",
)
REDRIVE_PERMISSION = "factory.change_deadletter"
# One click redrives at most this many, so the request stays short; the message says how many are left.
REDRIVE_BATCH = 200


def _svg(svg: str) -> str:
    return mark_safe(svg)  # noqa: S308 - charts.py escapes every piece of text it writes


def _duration_unit(longest_seconds: float) -> tuple[str, float]:
    if longest_seconds < 120:
        return "seconds", 1
    if longest_seconds < 2 * 3600:
        return "minutes", 60
    return "hours", 3600


def stock_chart(sku: str | None) -> tuple[str, str | None]:
    """The chart of one product's on-hand over the last day, and the SKU it shows."""
    product = selectors.product_for_chart(sku)
    labels = {"x_label": f"time ({timezone.get_current_timezone_name()})", "y_label": "on hand"}
    if product is None:
        message = f"No product with SKU {sku}" if sku else "No products yet"
        return _svg(charts.line_chart([], title="Stock over the last 24 hours", empty_message=message, **labels)), None
    history = selectors.stock_history(product)
    svg = charts.line_chart(
        history.points,
        title=f"Stock of {product.sku} over the last 24 hours",
        x_range=(history.since, history.until),
        x_format=lambda t: timezone.localtime(t).strftime("%H:%M"),
        step=True,
        integers=True,
        **labels,
    )
    return _svg(svg), product.sku


def lead_time_chart() -> str:
    lead_times = selectors.restock_lead_times()
    unit, divisor = _duration_unit(max((lead.seconds for lead in lead_times), default=0))
    return _svg(
        charts.bar_chart(
            [(f"#{lead.restock_id} {lead.sku}", round(lead.seconds / divisor, 2)) for lead in lead_times],
            title="Restock lead times (last fulfilled, ordered in the past 7 days)",
            x_label="restock, oldest first",
            y_label=unit,
            max_x_labels=6,
            empty_message="No restock fulfilled in the past 7 days",
        )
    )


def sales_chart() -> str:
    per_minute = selectors.sales_per_minute()
    return _svg(
        charts.bar_chart(
            [(timezone.localtime(minute).strftime("%H:%M"), count) for minute, count in per_minute],
            title="Sales per minute, last hour",
            x_label=f"minute ({timezone.get_current_timezone_name()})",
            y_label="sales",
            max_x_labels=7,
            integers=True,
        )
    )


@require_GET
def dashboard_view(request):
    if not request.user.has_perms(VIEW_PERMISSIONS):
        raise PermissionDenied
    sku = request.GET.get("sku", "").strip() or None
    stock_svg, chart_sku = stock_chart(sku)
    open_restocks, open_restock_count = selectors.restocks_open()
    products = selectors.stock_list()
    context = {
        **admin.site.each_context(request),
        "title": "Ops dashboard",
        "products": products,
        "product_count": selectors.product_count(),
        "open_restocks": open_restocks,
        "open_restock_count": open_restock_count,
        "dead_letter_count": selectors.dead_letters_unresolved_count(),
        "can_redrive": request.user.has_perm(REDRIVE_PERMISSION),
        "alerts": selectors.alerts_recent(),
        "chart_sku": chart_sku,
        "requested_sku": sku,
        "stock_chart": stock_svg,
        "lead_time_chart": lead_time_chart(),
        "sales_chart": sales_chart(),
    }
    return TemplateResponse(request, "ops/dashboard.html", context)


@require_POST
def redrive_all_view(request):
    """Redrive every unresolved dead letter (up to REDRIVE_BATCH per click), oldest first. Each redrive
    commits on its own and sends its work after that commit (factory.redrive.dead_letter_redrive)."""
    if not request.user.has_perm(REDRIVE_PERMISSION):
        raise PermissionDenied
    unresolved = DeadLetter.objects.unresolved().order_by("pk")
    result = admin.site.get_model_admin(DeadLetter).redrive_logged(
        request, unresolved[:REDRIVE_BATCH], where="the dashboard"
    )
    text = result.summary()
    left = unresolved.count()
    # Open until the factory takes the order, however often they are redriven: another click changes nothing.
    # The summary counts those of this click; those past its batch are told apart, not asked to click again.
    on_their_way = unresolved.filter(restock__status=Restock.Status.PENDING)
    past_this_batch = on_their_way.exclude(pk__in=[dead_letter.pk for dead_letter in result.sent_already]).count()
    if past_this_batch:
        outcome = Redrive.ON_ITS_WAY if past_this_batch == 1 else Redrive.ON_THEIR_WAY
        text += f" {past_this_batch} more {outcome}."
    still_waiting = left - on_their_way.count()
    if still_waiting:
        text += f" {still_waiting} still waiting: click Redrive all again."
    if result.sent:
        messages.success(request, text)
    else:
        warn = result.nothing or result.superseded or result.unsent or result.sent_already
        (messages.warning if warn else messages.info)(request, text)
    return redirect(reverse("dashboard"))


urlpatterns = [
    path("", admin.site.admin_view(dashboard_view), name="dashboard"),
    path("redrive-all/", admin.site.admin_view(redrive_all_view), name="dashboard-redrive-all"),
]
