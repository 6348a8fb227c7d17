"""Reading admin pages as a user sees them."""

import re
from html.parser import HTMLParser


def row_for(html, sku):
    """The changelist table row whose link text is this SKU."""
    rows = [row for row in re.findall(r"<tr[^>]*>.*?</tr>", html, re.S) if f">{sku}</a>" in row]
    assert len(rows) == 1, f"expected one row for {sku}, found {len(rows)}"
    return rows[0]


def shown_messages(response) -> list[str]:
    """The messages the admin shows on this page (an action's outcome, a refusal), as the user reads them."""
    return [str(m) for m in response.context["messages"]]


class _FormFields(HTMLParser):
    """The fields of the page's change form (`<form id="..._form">`) and their values, as the page shows them."""

    def __init__(self):
        super().__init__()
        self.fields: dict[str, str] = {}
        self.in_form = self.select = self.textarea = None

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "form" and (attrs.get("id") or "").endswith("_form"):
            self.in_form = True
        if not self.in_form:
            return
        name = attrs.get("name")
        if tag == "input" and name and attrs.get("type") not in ("submit", "button"):
            if attrs.get("type") not in ("checkbox", "radio") or "checked" in attrs:
                self.fields[name] = attrs.get("value") or ("on" if attrs.get("type") == "checkbox" else "")
        elif tag == "select" and name:
            self.select = name
        elif tag == "option" and self.select and "selected" in attrs:
            self.fields[self.select] = attrs.get("value") or ""
        elif tag == "textarea" and name:
            self.textarea = name
            self.fields[name] = ""

    def handle_data(self, data):
        if self.textarea:
            self.fields[self.textarea] += data

    def handle_endtag(self, tag):
        if tag == "form":
            self.in_form = None
        elif tag == "select":
            self.select = None
        elif tag == "textarea":
            self.textarea = None


def form_as_sent(response, **changes) -> dict[str, str]:
    """What a browser sends when its user changes `changes` on this change page and presses Save: every field
    as the page showed it (hidden ones included), the changes applied; a change of None unticks a checkbox."""
    parser = _FormFields()
    parser.feed(response.content.decode())
    sent = {**parser.fields, **changes, "_save": "Save"}
    return {name: value for name, value in sent.items() if value is not None}
