"""The admin for ops staff. Stock changes only through services.stock_adjust (a ledger row each);
sales, movements and restocks are records to look at, never to edit by hand."""

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.db.models import Exists, OuterRef, Q
from django.shortcuts import redirect
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils.html import format_html

from donutsite.admin import EditedFieldsAdmin, ModelAdmin
from donutsite.errors import DomainError
from inventory import services
from inventory.errors import SkuCaseTwin
from inventory.models import IdempotencyKey, Product, Restock, Sale, SaleLine, StockMovement

ADJUST_LIMIT = 1_000_000  # far above any real tray count, far below the on-hand column's range


class ViewOnly:
    """For admins and inlines: viewable, never added, edited or deleted here (services write these rows)."""

    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


class ReadOnlyAdmin(ViewOnly, ModelAdmin):
    pass


class LedgerAdmin(ReadOnlyAdmin):
    """For the tables that grow with every sale (millions of rows after a few rushes). A page's rows are
    read from the table alone, newest first down its primary key, and the products or clients they name
    are fetched after them (`list_prefetch_related`): joined to a table of a few rows, MariaDB read the
    small table first and sorted the whole big one for every page (4-5 s at 2 million sales, 12 s for the
    ledger: past the database read timeout in production). Only the filtered count, not the full one, and no
    date_hierarchy, whose links are an aggregate over the whole table (docs/benchmarks.md, "Admin")."""

    show_full_result_count = False
    list_select_related = ()  # nullable foreign keys (LEFT JOINs, which MariaDB reads after this table) may be named
    list_prefetch_related: tuple[str, ...] = ()

    def get_queryset(self, request):
        return super().get_queryset(request).prefetch_related(*self.list_prefetch_related)


# Products


class StockLevelFilter(admin.SimpleListFilter):
    title = "stock level"
    parameter_name = "stock"

    def lookups(self, request, model_admin):
        return [("out", "Out (none on hand)"), ("low", "Low (at or below reorder point)"), ("ok", "OK")]

    def queryset(self, request, queryset):
        match self.value():
            case "out":
                return queryset.filter(Product.OUT)
            case "low":
                return queryset.filter(Product.AT_OR_BELOW_REORDER_POINT & ~Product.OUT)
            case "ok":
                return queryset.exclude(Product.AT_OR_BELOW_REORDER_POINT)
        return queryset


_BADGES = {"OUT": "stock-out", "LOW": "stock-low", "ok": "stock-ok"}  # classes of inventory/admin.css


def stock_level(product: Product) -> str:
    """The level as the admin shows it: a problem in capitals."""
    level = product.stock_level
    return level if level == "ok" else level.upper()


class StockAdjustmentForm(forms.Form):
    quantity = forms.IntegerField(
        min_value=-ADJUST_LIMIT,
        max_value=ADJUST_LIMIT,
        help_text="Signed: 12 adds twelve, -3 takes three out.",
    )
    reason = forms.CharField(max_length=255, help_text="Why, for the ledger (e.g. 'dropped tray', 'stock count').")

    def clean_quantity(self):
        quantity = self.cleaned_data["quantity"]
        if quantity == 0:
            raise forms.ValidationError("Enter a quantity other than zero.")
        return quantity


@admin.register(Product)
class ProductAdmin(EditedFieldsAdmin):
    list_display = (
        "sku",
        "name",
        "price",
        "on_hand",
        "reorder_point",
        "reorder_quantity",
        "is_active",
        "stock_badge",
    )
    list_filter = ("is_active", StockLevelFilter)
    search_fields = ("sku", "name")
    actions = ["adjust_stock"]
    readonly_fields = ("on_hand", "created_at", "updated_at")

    class Media:
        css = {"all": ["inventory/admin.css"]}  # the stock badges: no style attribute under the CSP

    def get_fields(self, request, obj=None):
        fields = ["sku", "name", "price", "is_active", "on_hand", "reorder_point", "reorder_quantity"]
        return [*fields, "created_at", "updated_at"] if obj else fields

    def get_readonly_fields(self, request, obj=None):
        # A SKU is fixed once it exists: API clients and the per-process SKU cache rely on it.
        readonly = tuple(super().get_readonly_fields(request, obj))
        return (*readonly, "sku") if obj else readonly

    def has_delete_permission(self, request, obj=None):
        # Products are retired (is_active), never deleted: sales and the ledger point at them.
        return False

    def add_view(self, request, form_url="", extra_context=None):
        try:
            return super().add_view(request, form_url, extra_context)
        except SkuCaseTwin:
            # A product whose SKU differs only in case was committed after this form was checked and before
            # its INSERT, which the database refused (Product.sku_folded). The post again: now its form
            # finds the twin, and says so beside the SKU (Product.validate_unique) instead of a 500.
            return super().add_view(request, form_url, extra_context)

    def save_new(self, request, obj):
        services.product_create(product=obj)  # on_hand is not a form field, so a new product starts at 0

    def save_edited(self, request, obj, fields):
        # On the locked row, through the service: it reorders, announces or withdraws what the edit calls for.
        services.product_update(product=obj, fields=fields)

    @admin.display(description="Stock", ordering="on_hand")
    def stock_badge(self, product):
        level = stock_level(product)
        return format_html('<span class="stock-badge {}">{}</span>', _BADGES[level], level)

    @admin.action(description="Adjust stock of selected products", permissions=["change"])
    def adjust_stock(self, request, queryset):
        # The adjust page itself, its form carrying the ids in its body: a redirect with them in its URL
        # passed gunicorn's 4094-byte request line from about a thousand products, and ops got a 414.
        return self._adjust_stock_page(request, list(queryset.order_by("sku")), StockAdjustmentForm())

    def get_urls(self):
        adjust = path(
            "adjust-stock/",
            self.admin_site.admin_view(self.adjust_stock_view),
            name="inventory_product_adjust_stock",
        )
        return [adjust, *super().get_urls()]  # before the catch-all "<object_id>/" patterns

    def adjust_stock_view(self, request):
        """Apply one signed quantity to each chosen product, each through stock_adjust on its own: a
        product that would go negative is refused and reported, the others are still adjusted."""
        if not self.has_change_permission(request):
            raise PermissionDenied
        # In the body from the form the action shows, in the URL from the product page's link.
        listed = request.POST.get("ids") or request.GET.get("ids", "")
        ids = [number for part in listed.split(",") if (number := _number(part.strip())) is not None]
        products = list(Product.objects.filter(pk__in=ids).order_by("sku"))
        changelist = reverse("admin:inventory_product_changelist")
        if not products:
            self.message_user(request, "Pick at least one product to adjust.", messages.WARNING)
            return redirect(changelist)

        form = StockAdjustmentForm(request.POST if request.method == "POST" else None)
        if form.is_valid():
            quantity, reason = form.cleaned_data["quantity"], form.cleaned_data["reason"]
            adjusted = 0
            for product in products:
                try:
                    services.stock_adjust(product=product, quantity=quantity, reason=reason, user=request.user)
                except DomainError as exc:
                    self.message_user(request, f"{product.sku} not adjusted: {exc.message}", messages.ERROR)
                    continue
                adjusted += 1
                self.log_change(request, product, f"Adjusted stock by {quantity:+d}: {reason}")
                self.message_user(
                    request, f"{product.sku}: {quantity:+d}, on hand now {product.on_hand}.", messages.SUCCESS
                )
            if adjusted:
                return redirect(changelist)
            # Nothing changed: stay on the form, with the input kept, so the quantity can be corrected.
        return self._adjust_stock_page(request, products, form)

    def _adjust_stock_page(self, request, products, form):
        context = {
            **self.admin_site.each_context(request),
            "opts": self.opts,
            "title": "Adjust stock",
            "form": form,
            "rows": [(p, stock_level(p)) for p in products],
            "ids": ",".join(str(p.pk) for p in products),
            "changelist_url": reverse("admin:inventory_product_changelist"),
        }
        return TemplateResponse(request, "admin/inventory/product/adjust_stock.html", context)


# Sales and the ledger


class SaleLineInline(ViewOnly, admin.TabularInline):
    model = SaleLine
    fields = ("product", "quantity", "unit_price", "line_total")
    readonly_fields = fields
    extra = 0
    can_delete = False


@admin.register(Sale)
class SaleAdmin(LedgerAdmin):
    list_display = ("id", "client", "total", "idempotency_key", "created_at")
    list_filter = ("client", "created_at")
    list_prefetch_related = ("client",)
    search_fields = ("id",)  # shows the search box; get_search_results reads the term
    search_help_text = "A sale's number, or a SKU (exactly) for the sales that include it."
    inlines = [SaleLineInline]

    def get_search_results(self, request, queryset, search_term):
        # By primary key, and for a SKU one EXISTS per sale read down it: search_fields would compare the
        # id as text (no index) and take a DISTINCT over every sale joined to its lines (23 s at 2 million).
        term = search_term.strip()
        if not term:
            return queryset, False
        match, number = Q(pk__in=[]), _number(term)
        if number is not None:
            match |= Q(pk=number)
        product = Product.objects.filter(sku=term).first()
        if product is not None:
            match |= Q(Exists(SaleLine.objects.filter(sale=OuterRef("pk"), product=product)))
        return queryset.filter(match), False


@admin.register(StockMovement)
class StockMovementAdmin(LedgerAdmin):
    list_display = ("id", "created_at", "product", "kind", "quantity", "reason", "sale", "restock", "created_by")
    list_filter = ("kind", "product", "created_at")
    list_select_related = ("sale", "restock", "created_by")
    list_prefetch_related = ("product",)
    search_fields = ("reason",)
    search_help_text = "A SKU (exactly), a sale's number, or words of the reason."

    def get_search_results(self, request, queryset, search_term):
        # A SKU or a sale's number through their indexes; the reason's words only when the term is neither
        # (a LIKE over millions of rows, OR-ed with the others, made every search scan the whole ledger).
        term = search_term.strip()
        product = Product.objects.filter(sku=term).first() if term else None
        if product is not None:
            return queryset.filter(product=product), False
        if (number := _number(term)) is not None:
            return queryset.filter(sale_id=number), False
        return super().get_search_results(request, queryset, search_term)


def _number(term: str) -> int | None:
    """The term as a row's id, if it can be one (int() refuses over 4300 digits; an id has at most 19)."""
    return int(term) if term.isascii() and term.isdigit() and len(term) <= 19 and int(term) < 2**63 else None


@admin.register(Restock)
class RestockAdmin(ReadOnlyAdmin):
    list_display = (
        "id",
        "sku",
        "quantity",
        "status",
        "reason",
        "expected_at",
        "created_at",
    )
    list_filter = ("status", "reason")
    list_select_related = ("product",)
    # The request id whole (docs/operations.md, "Reading a trace"), as it is copied from a log or an alert.
    search_fields = ("product__sku", "=correlation_id")
    search_help_text = "A restock's number, a SKU, or the request id that opened it (whole)."
    exclude = ("open_product",)  # a database helper column, meaningless to people

    def get_search_results(self, request, queryset, search_term):
        # A number is also the restock's id, exactly, by primary key: the number alerts, log lines and a
        # client's out_of_stock name. In search_fields it would be compared as text, "5" finding 15 and 50.
        found, may_have_duplicates = super().get_search_results(request, queryset, search_term)
        if (number := _number(search_term.strip())) is not None:
            found |= queryset.filter(pk=number)
        return found, may_have_duplicates

    @admin.display(description="SKU", ordering="product__sku")
    def sku(self, restock):
        return restock.product.sku


@admin.register(IdempotencyKey)
class IdempotencyKeyAdmin(LedgerAdmin):
    """Kept visible for support ("why did my retry return the old sale?"); purged by the beat task
    inventory.idempotency_keys_purge once IDEMPOTENCY_KEY_TTL_HOURS old."""

    list_display = ("client", "key", "sale", "out_of_stock", "created_at")
    list_filter = ("client",)
    list_select_related = ("sale",)
    list_prefetch_related = ("client",)
    search_fields = ("key",)
    exclude = ("request_hash",)

    @admin.display(boolean=True, description="out of stock")
    def out_of_stock(self, obj):
        return obj.refusal is not None
