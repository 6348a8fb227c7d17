"""Requests as a client app sends them."""

SALES = "/api/v1/sales/"


def buy(http, *items, **headers):
    """POST a sale of (sku, quantity) pairs with a DRF test client."""
    return http.post(SALES, {"items": [{"sku": s, "quantity": q} for s, q in items]}, format="json", **headers)
