"""Reading admin pages as a user sees them."""

import re


def row_for(html, sku):
    """The changelist table row whose link text is this SKU."""
    rows = [row for row in re.findall(r"<tr[^>]*>.*?</tr>", html, re.S) if f">{sku}</a>" in row]
    assert len(rows) == 1, f"expected one row for {sku}, found {len(rows)}"
    return rows[0]
