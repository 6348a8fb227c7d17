"""DRF's content negotiation, with the answers a client can act on where DRF's misled it.

- `?format=xml` (a format the URL does not render) was a 404 `not_found`: the client read its URL as
  wrong when only the format was. It is a `406 not_acceptable` naming the formats `?format=` takes there.
- A `Content-Type` with a wildcard (`*/*`, `application/*`) was read as JSON: DRF matches it as a pattern
  against the parser's `application/json`, as if it were an Accept range. A Content-Type names the body's
  type, and a range names none, so it is a `415 unsupported_media_type` like any other type we do not read.
- `Accept: application/json;q=0` (the client cannot read JSON) was answered JSON: DRF orders Accept's
  ranges by how specific they are and ignores their quality. A type whose most specific matching range
  has q=0 is one the client refuses (RFC 9110, 12.4.2 and 12.5.1), so it is not rendered; when that leaves
  none, the answer is a `406 not_acceptable`. A quality is 0 when its number is: RFC 9110's `0` to `0.000`
  (`q` or `Q`), and the spellings outside it whose writer meant zero (`.0`, `+0`, `q = 0`). `q=0.0001` is
  the least wanted, not refused (Django's quality rounds it to 0). A zero-quality range with parameters
  (`application/json;indent=4;q=0`) refuses that rendering only, not the type: beside `application/json`
  it was a 406, and DRF, which reads no quality, would have rendered the refused one.
- An Accept naming no range DRF reads (blank, most likely a client library setting the header to nothing,
  or a lone range over DRF's 256 characters) was a 406 "Could not satisfy the request Accept header" to a
  client that refused nothing. It is disregarded, as RFC 9110 (12.5.1) allows: answered as if absent.
"""

from django.http.request import MediaType
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

    def select_renderer(self, request, renderers, format_suffix=None):
        if "q" not in request.META.get("HTTP_ACCEPT", "").lower():
            # No quality (a `q` or `Q` parameter), so nothing refused: DRF's own choice, without parsing each
            # range again on every request, the sold-out rush's included.
            return super().select_renderer(request, renderers, format_suffix)
        ranges = media_ranges(super().get_accept_list(request))  # DRF's list, bounded in size
        wanted = [renderer for renderer in renderers if not refused(renderer.media_type, ranges)]
        if not wanted:
            raise exceptions.NotAcceptable(available_renderers=renderers)
        return super().select_renderer(request, wanted, format_suffix)

    def filter_renderers(self, renderers, format):
        chosen = [renderer for renderer in renderers if renderer.format == format]
        if not chosen:
            formats = " or ".join(dict.fromkeys(renderer.format for renderer in renderers))
            raise exceptions.NotAcceptable(
                f"?format={echoed(format)} is not offered here; it takes {formats}.", available_renderers=renderers
            )
        return chosen

    def get_accept_list(self, request):
        tokens = super().get_accept_list(request)
        if "q" in request.META.get("HTTP_ACCEPT", "").lower():
            # What the client refuses is not for DRF to choose by: select_renderer answered the refusals.
            tokens = [token for token in tokens if not any(map(zero_quality, media_ranges([token])))]
        # Blank, or only ranges DRF does not read (over 256 characters): nothing named, answered as if absent.
        return tokens or ["*/*"]


def media_ranges(tokens: list[str]) -> list[MediaType]:
    """Accept's ranges, skipping one Django cannot parse (a parameter naming an unknown charset, `a*=zz''b`,
    is a ValueError), as DRF's own choice skips it: raised, it was a 500 on every endpoint."""
    ranges = []
    for token in tokens:
        try:
            ranges.append(MediaType(token))
        except ValueError:
            continue
    return ranges


def refused(media_type: str, ranges: list[MediaType]) -> bool:
    """Whether Accept's ranges say "not this" of the type: every most specific range matching it has q=0.
    `text/html;q=0, */*` refuses HTML and takes JSON; `application/json;q=0, */*` refuses JSON. A type no
    range matches is not refused here (DRF's own negotiation answers 406 for it). A range with parameters
    names the type too, as DRF reads it (`application/json; indent=4` is JSON, indented): asked the other
    way round, Django's match leaves it out, and `application/json; indent=4, */*;q=0` was refused. With
    q=0 it refuses that rendering only (rendering_named): `application/json;indent=4;q=0, application/json`
    is JSON, plain."""
    offered = MediaType(media_type)
    matching = [
        accepted
        for accepted in ranges
        if accepted.match(offered) and not (zero_quality(accepted) and rendering_named(accepted))
    ]
    if not matching:
        return False
    most_specific = max(accepted.specificity for accepted in matching)
    return all(zero_quality(accepted) for accepted in matching if accepted.specificity == most_specific)


def rendering_named(accepted: MediaType) -> bool:
    """Whether the range's parameters name one rendering of its type (`indent=4`) rather than the type. A
    charset does not: JSON is UTF-8 (RFC 8259), so `application/json; charset=utf-8;q=0` refuses JSON."""
    return bool(set(accepted.range_params) - {"charset"})


def zero_quality(accepted: MediaType) -> bool:
    # Django's quality without its rounding to three places, which made `q=0.0001` a refusal.
    try:
        return float(accepted.params.get("q", 1)) == 0
    except ValueError:
        return False
