"""Reading admin pages as a user sees them."""

import re


def row_for(html, sku):
    """The changelist table row whose link text is this SKU."""
    rows = [row for row in re.findall(r"<tr[^>]*>.*?</tr>", html, re.S) if f">{sku}</a>" in row]
    assert len(rows) == 1, f"expected one row for {sku}, found {len(rows)}"
    return rows[0]


def shown_messages(response) -> list[str]:
    """The messages the admin shows on this page (an action's outcome, a refusal), as the user reads them."""
    return [str(m) for m in response.context["messages"]]
