"""Requests as a client app sends them."""

import json
import urllib.error
import urllib.request

SALES = "/api/v1/sales/"


def buy(http, *items, **headers):
    """POST a sale of (sku, quantity) pairs with a DRF test client."""
    return http.post(SALES, {"items": [{"sku": s, "quantity": q} for s, q in items]}, format="json", **headers)


def buy_over_http(system, key, sku, quantity) -> tuple[int, dict]:
    """POST a sale of one SKU to a running system's web server; the status and the JSON answer."""
    request = urllib.request.Request(  # noqa: S310 - local
        system.web_url + SALES,
        data=json.dumps({"items": [{"sku": sku, "quantity": quantity}]}).encode(),
        headers={"Authorization": f"Api-Key {key}", "Content-Type": "application/json"},
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310 - local
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())
