"""DRF's content negotiation, with the answers a client can act on where DRF's misled it.

- `?format=xml` (a format the URL does not render) was a 404 `not_found`: the client read its URL as
  wrong when only the format was. It is a `406 not_acceptable` naming the formats `?format=` takes there.
- A `Content-Type` with a wildcard (`*/*`, `application/*`) was read as JSON: DRF matches it as a pattern
  against the parser's `application/json`, as if it were an Accept range. A Content-Type names the body's
  type, and a range names none, so it is a `415 unsupported_media_type` like any other type we do not read.
"""

from rest_framework import exceptions
from rest_framework.negotiation import DefaultContentNegotiation

from donutsite.errors import echoed


class ContentNegotiation(DefaultContentNegotiation):
    def select_parser(self, request, parsers):
        if "*" in request.content_type.split(";", 1)[0]:
            # Only a parser that reads any type (the factory's callbacks, whose signature vouches for the
            # bytes) reads such a body; None is DRF's 415.
            parsers = [parser for parser in parsers if parser.media_type == "*/*"]
        return super().select_parser(request, parsers)

    def filter_renderers(self, renderers, format):
        chosen = [renderer for renderer in renderers if renderer.format == format]
        if not chosen:
            formats = " or ".join(dict.fromkeys(renderer.format for renderer in renderers))
            raise exceptions.NotAcceptable(
                f"?format={echoed(format)} is not offered here; it takes {formats}.", available_renderers=renderers
            )
        return chosen
