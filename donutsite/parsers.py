"""The API's one JSON parser: DRF's, but a body nested too deeply to parse, or naming one key twice in an
object, is `malformed_json` too. (The factory's callbacks are parsed by their own parser, after their
signature is checked, with the same duplicate-key rule.)

Python's json module refuses nesting past the interpreter's recursion limit with RecursionError,
which is not a ValueError, so DRF let `[` x 100,000 through as a 500. And it keeps the last of two
values under one key, where other parsers keep the first or refuse: a proxy, a client's own check or a
log reader could see another order than the one sold (`"quantity": 1, "quantity": 100` sold 100).

And it reads UTF-8 whatever charset the `Content-Type` names, as the factory's callbacks are read: JSON
is UTF-8, and RFC 8259 defines no charset parameter ("adding one really has no effect on compliant
recipients"), so a proxy or a log reader reads the bytes as UTF-8. DRF decoded them in the charset named:
a Latin-1 or UTF-16 body sold what those never saw. Bytes that are not UTF-8 are `malformed_json`, and so
is an escape of half a character (`"\\ud800"`), which no UTF-8 can carry.

A body sent with a Content-Encoding (gzip, say) is `415 unsupported_media_type` naming it: bodies are read
as sent, so the compressed bytes were a `malformed_json`, which sent the client looking for a mistake in
its JSON.

A number with more digits than Python converts (`sys.get_int_max_str_digits()`, 4300) is `malformed_json`
saying so: Python's own message told the client to call `sys.set_int_max_str_digits()`.
"""

import sys

from rest_framework import parsers
from rest_framework.exceptions import ParseError
from rest_framework.utils import json

from donutsite.errors import DomainError, echoed


class ContentCoded(DomainError):
    code = "unsupported_media_type"
    status = 415

    def __init__(self, coding: str):
        # Accept-Encoding in a 415 says which codings would do (RFC 9110, 15.5.16): none but identity.
        message = f"Content-Encoding {echoed(coding)!r} is not supported; send the body uncompressed, without it."
        super().__init__(message, headers={"Accept-Encoding": "identity"})


def content_coded(headers) -> bool:
    """A body sent compressed (or otherwise coded): a Content-Encoding other than `identity`."""
    return headers.get("Content-Encoding", "").strip().lower() not in ("", "identity")


def content_coded_refuse(parser_context) -> None:
    """Raise ContentCoded for the request a parser reads (DRF names it in `parser_context`)."""
    request = (parser_context or {}).get("request")
    if request is not None and content_coded(request.headers):
        raise ContentCoded(request.headers["Content-Encoding"])


class DuplicateKey(ValueError):
    pass


def no_duplicate_keys(pairs: list[tuple[str, object]]) -> dict:
    obj = dict(pairs)
    if len(obj) != len(pairs):
        seen = set()
        twice = next(name for name, _ in pairs if name in seen or seen.add(name))
        raise DuplicateKey(f"the key {echoed(twice)!r} appears twice in one object")
    return obj


def _no_lone_surrogates(data) -> None:
    """Raise ValueError if a string of `data` holds half of a UTF-16 pair (`"\\ud800"`): it is no
    character, cannot be written as UTF-8, and answering with it (an unknown field's name in the error)
    raised UnicodeEncodeError, a 500."""
    try:
        json.dumps(data, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("a \\u escape is half of a character (a lone surrogate)") from None


def _int(digits: str) -> int:
    """json's parse_int: Python's refusal of a long number, worded for the client, not the server."""
    limit = sys.get_int_max_str_digits()
    if limit and len(digits.lstrip("-")) > limit:
        raise ValueError(f"a number has more than {limit} digits.")
    return int(digits)


class JSONParser(parsers.JSONParser):
    def parse(self, stream, media_type=None, parser_context=None):
        # DRF's parse (strict constants), UTF-8 whatever the charset, with the duplicate-key check added.
        content_coded_refuse(parser_context)
        try:
            text = stream.read().decode("utf-8")
            parse_constant = json.strict_constant if self.strict else None
            data = json.loads(text, parse_constant=parse_constant, parse_int=_int, object_pairs_hook=no_duplicate_keys)
            if "\\u" in text:  # only an escape can make half a character: UTF-8 bytes cannot
                _no_lone_surrogates(data)
            return data
        except RecursionError:
            raise ParseError("JSON parse error - nested too deeply.") from None
        except ValueError as exc:
            raise ParseError(f"JSON parse error - {exc}") from None
