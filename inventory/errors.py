from donutsite.errors import Conflict, DomainError, NotFound


class UnknownSku(NotFound):
    code = "unknown_sku"
    message = "No product is for sale under that SKU."


class SaleNotFound(NotFound):
    message = "No such sale."


class RestockNotFound(NotFound):
    message = "No such restock."


class OutOfStock(Conflict):
    code = "out_of_stock"
    message = "Not enough stock; nothing was sold. A restock is on its way."
    routine = True  # a sold-out rush answers thousands a second


class IdempotencyKeyReused(DomainError):
    code = "idempotency_key_reused"
    status = 422
    message = "This Idempotency-Key was already used with a different request body."


class InvalidAdjustment(DomainError):
    code = "invalid_adjustment"
    message = "That adjustment would leave stock negative or changes nothing."


class SkuCaseTwin(Conflict):
    """A new product's SKU differs from an existing one's only in case (Product.sku_folded)."""

    code = "sku_case_twin"
    message = "Another product's SKU differs from this one only in case."
