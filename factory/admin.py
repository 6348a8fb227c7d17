"""The factory's side of the admin: dead letters to look at and redrive, every call made to the factory,
and those calls shown on each restock.

Dead letters are records, not forms: nothing here edits one. Redriving goes through
factory.redrive.dead_letters_redrive, and old resolved ones are deleted by `manage.py purge_dead_letters`, not
here (the bulk delete action cannot tell a resolved dead letter from one still waiting for ops).
"""

from datetime import timedelta

from django.contrib import admin, messages
from django.contrib.admin.utils import unquote
from django.core.exceptions import PermissionDenied
from django.http import Http404
from django.shortcuts import redirect
from django.urls import path, reverse
from django.utils import formats, timezone
from django.utils.html import format_html, format_html_join
from django.utils.text import Truncator
from django.utils.timesince import timesince
from django.views.decorators.http import require_POST

from factory.models import DeadLetter, FactoryAttempt
from factory.redrive import Redrive, dead_letters_redrive
from inventory.admin import ReadOnlyAdmin, RestockAdmin
from inventory.models import Restock

EMPTY = "—"


def _when(value) -> str:
    # To the second: attempts on one restock are often seconds apart.
    return formats.date_format(timezone.localtime(value), "Y-m-d H:i:s") if value else EMPTY


def restock_link(restock_id, label=None):
    if restock_id is None:
        return EMPTY
    url = reverse("admin:inventory_restock_change", args=[restock_id])
    return format_html('<a href="{}">{}</a>', url, label or f"restock {restock_id}")


CALLS_SHOWN = 50


def factory_calls(restock_id) -> str:
    """The restock's latest CALLS_SHOWN calls to the factory as a table, oldest first, after how many earlier
    ones the call list holds: a restock the factory rate limits for hours (a 429 spends no attempt) makes
    thousands, and a page rendering every one would be megabytes."""
    calls = FactoryAttempt.objects.filter(restock_id=restock_id).order_by("-number", "-pk")
    latest = list(calls[:CALLS_SHOWN])[::-1]
    total = calls.count() if len(latest) == CALLS_SHOWN else len(latest)
    if total == len(latest):
        return attempts_table(latest)
    url = reverse("admin:factory_factoryattempt_changelist")
    return format_html(
        '<p>{} earlier calls are not shown: <a href="{}?q={}">all {}</a>.</p>{}',
        total - len(latest),
        url,
        restock_id,
        total,
        attempts_table(latest),
    )


def attempts_table(attempts) -> str:
    """The factory calls for one restock as an HTML table; every value escaped."""
    rows = format_html_join(
        "",
        "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
        (
            (
                attempt.number,
                attempt.get_outcome_display(),
                attempt.status_code if attempt.status_code is not None else EMPTY,
                attempt.latency_ms,
                attempt.error or EMPTY,
                _when(attempt.created_at),
            )
            for attempt in attempts
        ),
    )
    if not rows:
        return "No calls to the factory were recorded for this restock."
    return format_html(
        '<table class="factory-attempts"><thead><tr><th>#</th><th>Outcome</th><th>Status code</th>'
        "<th>Latency (ms)</th><th>Error</th><th>Time</th></tr></thead><tbody>{}</tbody></table>",
        rows,
    )


# Dead letters


class AgeFilter(admin.SimpleListFilter):
    title = "age"
    parameter_name = "age"

    def lookups(self, request, model_admin):
        return [("hour", "Last hour"), ("day", "Last day"), ("older", "Older than a day")]

    def queryset(self, request, queryset):
        now = timezone.now()
        match self.value():
            case "hour":
                return queryset.filter(last_failed_at__gte=now - timedelta(hours=1))
            case "day":
                return queryset.filter(last_failed_at__gte=now - timedelta(days=1))
            case "older":
                return queryset.filter(last_failed_at__lt=now - timedelta(days=1))
        return queryset


class ResolvedFilter(admin.SimpleListFilter):
    title = "resolved (redriven)"
    parameter_name = "resolved"

    def lookups(self, request, model_admin):
        return [("yes", "Yes"), ("no", "No")]

    def queryset(self, request, queryset):
        match self.value():
            case "yes":
                return queryset.resolved()
            case "no":
                return queryset.unresolved()
        return queryset


@admin.register(DeadLetter)
class DeadLetterAdmin(ReadOnlyAdmin):
    # Few, short columns: with the filters beside it the list must fit 1,400 px (a browser test holds it).
    # The full error, the times and the traceback are on the change page.
    list_display = ("id", "task_name", "restock_column", "short_message", "attempts", "age", "resolved", "redrives")
    list_filter = ("task_name", "exception_type", AgeFilter, ResolvedFilter)
    list_select_related = ("restock__product",)
    # "restock__id__exact" compares the id as text, so searching for a task id does not fail on the integer.
    # A SKU written exactly, as the alert names it ("Dead letter: GLAZED (...)"), finds its product's dead letters.
    search_fields = ("task_id", "correlation_id", "restock__id__exact", "restock__product__sku__exact")
    actions = ["redrive"]
    change_form_template = "admin/factory/deadletter/change_form.html"

    class Media:
        # The error, the traceback and the Redrive button: styled there, no style attribute under the CSP.
        css = {"all": ["factory/admin.css"]}

    def get_fieldsets(self, request, obj=None):
        fieldsets = [
            (
                None,
                {
                    "fields": (
                        "task_name",
                        "task_id",
                        "queue",
                        "restock_column",
                        "correlation_id",
                        "attempts",
                        "first_failed_at",
                        "last_failed_at",
                        "age",
                    )
                },
            ),
            ("Error", {"fields": ("exception_type", "error_message", "traceback_text")}),
            ("Message", {"fields": ("args_text", "kwargs_text")}),
            ("Redrive", {"fields": ("resolved", "redriven_at", "redriven_by", "redrive_count")}),
        ]
        if obj is not None and obj.restock_id:
            fieldsets.append(("Calls to the factory for this restock", {"fields": ("factory_attempts",)}))
        return fieldsets

    def get_readonly_fields(self, request, obj=None):
        return [field for _, options in self.get_fieldsets(request, obj) for field in options["fields"]]

    @admin.display(description="Restock", ordering="restock_id")
    def restock_column(self, dead_letter):
        if dead_letter.restock_id is None:
            return EMPTY
        restock = dead_letter.restock
        return restock_link(restock.pk, f"restock {restock.pk} of {restock.product.sku} ({restock.status})")

    @admin.display(description="Error")
    def short_message(self, dead_letter):
        error = dead_letter.exception_type.rsplit(".", 1)[-1]
        return format_html(
            '<span title="{}">{}</span>',
            f"{dead_letter.exception_type}: {dead_letter.exception_message}",
            Truncator(f"{error}: {dead_letter.exception_message}").chars(60),
        )

    @admin.display(description="Age", ordering="-last_failed_at")
    def age(self, dead_letter):
        return f"{timesince(dead_letter.last_failed_at)} ago"

    @admin.display(description="Redrives", ordering="redrive_count")
    def redrives(self, dead_letter):
        return dead_letter.redrive_count

    @admin.display(description="Resolved", boolean=True, ordering="redriven_at")
    def resolved(self, dead_letter):
        return dead_letter.is_resolved

    @admin.display(description="Error message")
    def error_message(self, dead_letter):
        return format_html('<div class="dead-letter-text">{}</div>', dead_letter.exception_message or EMPTY)

    @admin.display(description="Traceback")
    def traceback_text(self, dead_letter):
        return format_html(
            '<pre class="dead-letter-text dead-letter-traceback">{}</pre>', dead_letter.traceback or EMPTY
        )

    @admin.display(description="Args")
    def args_text(self, dead_letter):
        return format_html("<code>{}</code>", repr(dead_letter.args))

    @admin.display(description="Kwargs")
    def kwargs_text(self, dead_letter):
        return format_html("<code>{}</code>", repr(dead_letter.kwargs))

    @admin.display(description="Factory calls")
    def factory_attempts(self, dead_letter):
        return factory_calls(dead_letter.restock_id)

    # Redrive: the action for many, a button on the change page for one

    def has_redrive_permission(self, request, obj=None):
        # Redriving changes the dead letter (and its restock): the model's change permission, which the
        # read-only base class hides from the edit form.
        return request.user.has_perm(f"{self.opts.app_label}.change_{self.opts.model_name}")

    @admin.action(description="Redrive selected dead letters", permissions=["redrive"])
    def redrive(self, request, queryset):
        result = self.redrive_logged(request, queryset, where="the admin")
        self.message_user(request, result.summary(), messages.SUCCESS if result.sent else messages.WARNING)

    def redrive_logged(self, request, dead_letters, *, where: str) -> Redrive:
        """The redrive service, each dead letter's outcome written to its admin history."""

        def log(dead_letter, sent):
            self.log_change(request, dead_letter, f"Redrive from {where}: {Redrive.outcome(sent)}.")

        return dead_letters_redrive(dead_letters, by=request.user.get_username(), user=request.user, on_each=log)

    def get_urls(self):
        redrive_one = path(
            "<path:object_id>/redrive/",
            self.admin_site.admin_view(self.redrive_view),
            name="factory_deadletter_redrive",
        )
        return [redrive_one, *super().get_urls()]  # before the catch-all "<object_id>/" patterns

    def redrive_view(self, request, object_id):
        return require_POST(self._redrive_one)(request, object_id)

    def _redrive_one(self, request, object_id):
        if not self.has_redrive_permission(request):
            raise PermissionDenied
        # The admin's own lookup: an id that is not a number (the URL takes any text) is not found, not a 500.
        dead_letter = self.get_object(request, unquote(object_id))
        if dead_letter is None:
            raise Http404(f"No dead letter {object_id!r}.")
        result = self.redrive_logged(request, [dead_letter], where="the admin")
        self.message_user(
            request,
            f"Dead letter {dead_letter.pk}: {result.outcome_of_one()}.",
            messages.SUCCESS if result.sent else messages.WARNING,
        )
        return redirect(reverse("admin:factory_deadletter_change", args=[dead_letter.pk]))

    def change_view(self, request, object_id, form_url="", extra_context=None):
        extra_context = {**(extra_context or {}), "has_redrive_permission": self.has_redrive_permission(request)}
        return super().change_view(request, object_id, form_url, extra_context)


# Factory calls


@admin.register(FactoryAttempt)
class FactoryAttemptAdmin(ReadOnlyAdmin):
    list_display = (
        "id",
        "restock_column",
        "number",
        "outcome",
        "status_code",
        "latency_ms",
        "short_error",
        "created_at",
    )
    list_filter = ("outcome", "status_code")
    search_fields = ("restock__id__exact",)
    date_hierarchy = "created_at"

    @admin.display(description="Restock", ordering="restock_id")
    def restock_column(self, attempt):
        return restock_link(attempt.restock_id)

    @admin.display(description="Error")
    def short_error(self, attempt):
        return Truncator(attempt.error).chars(80)


# Restocks: inventory's admin plus the factory calls. `inventory` must not import `factory`, so the
# factory app extends inventory's registration instead.


class FactoryRestockAdmin(RestockAdmin):
    list_display = (*RestockAdmin.list_display, "factory_order_id", "dispatched_at", "attempts")
    list_select_related = (*RestockAdmin.list_select_related, "factory_order")
    search_fields = (*RestockAdmin.search_fields, "factory_order__order_id")
    readonly_fields = (
        *RestockAdmin.readonly_fields,
        "factory_order_id",
        "dispatched_at",
        "attempts",
        "last_error",
        "dead_letters_link",
        "factory_calls",
    )

    @staticmethod
    def _order(restock):
        return getattr(restock, "factory_order", None)

    @admin.display(description="Factory order", ordering="factory_order__order_id")
    def factory_order_id(self, restock):
        order = self._order(restock)
        return (order and order.order_id) or EMPTY

    @admin.display(description="Last sent to the queue", ordering="factory_order__dispatched_at")
    def dispatched_at(self, restock):
        order = self._order(restock)
        return _when(order and order.dispatched_at)

    @admin.display(description="Calls to the factory")
    def attempts(self, restock):
        order = self._order(restock)
        return order.attempt_count if order else 0

    @admin.display(description="Last error")
    def last_error(self, restock):
        order = self._order(restock)
        return (order and order.last_error) or EMPTY

    @admin.display(description="Calls to the factory, latest last")
    def factory_calls(self, restock):
        return factory_calls(restock.pk)

    @admin.display(description="Dead letters")
    def dead_letters_link(self, restock):
        count = DeadLetter.objects.filter(restock_id=restock.pk).count()
        if not count:
            return "None"
        url = reverse("admin:factory_deadletter_changelist")
        return format_html(
            '<a href="{}?restock__id__exact={}">{} dead letter{}</a>', url, restock.pk, count, "s" if count != 1 else ""
        )


admin.site.unregister(Restock)
admin.site.register(Restock, FactoryRestockAdmin)
