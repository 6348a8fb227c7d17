"""DRF's content negotiation, with the answers a client can act on where DRF's misled it.

- `?format=xml` (a format the URL does not render) was a 404 `not_found`: the client read its URL as
  wrong when only the format was. It is a `406 not_acceptable` naming the formats `?format=` takes there.
"""

from rest_framework import exceptions
from rest_framework.negotiation import DefaultContentNegotiation

from donutsite.errors import echoed


class ContentNegotiation(DefaultContentNegotiation):
    def filter_renderers(self, renderers, format):
        chosen = [renderer for renderer in renderers if renderer.format == format]
        if not chosen:
            formats = " or ".join(dict.fromkeys(renderer.format for renderer in renderers))
            raise exceptions.NotAcceptable(
                f"?format={echoed(format)} is not offered here; it takes {formats}.", available_renderers=renderers
            )
        return chosen
