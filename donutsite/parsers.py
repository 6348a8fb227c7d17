"""The API's one JSON parser: DRF's, but a body nested too deeply to parse is `malformed_json` too.

Python's json module refuses nesting past the interpreter's recursion limit with RecursionError,
which is not a ValueError, so DRF let `[` x 100,000 through as a 500.
"""

from rest_framework import parsers
from rest_framework.exceptions import ParseError


class JSONParser(parsers.JSONParser):
    def parse(self, stream, media_type=None, parser_context=None):
        try:
            return super().parse(stream, media_type, parser_context)
        except RecursionError:
            raise ParseError("JSON parse error - nested too deeply.") from None
