"""The API's JSON parser: DRF's, with JSON nested too deeply to read answered as a 400.

DRF turns what the standard library cannot parse (``ValueError``) into a 400, but a body
nested deeper than Python's recursion limit (a few hundred ``[`` in a row, well within the
body size limit) raises ``RecursionError`` instead, which surfaced as a 500.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import IO, Any

from rest_framework import parsers
from rest_framework.exceptions import ParseError


class JSONParser(parsers.JSONParser):
    def parse(
        self, stream: IO[Any], media_type: str | None = None, parser_context: Mapping[str, Any] | None = None
    ) -> Any:
        try:
            return super().parse(stream, media_type, parser_context)
        except RecursionError:
            raise ParseError("JSON parse error - nested too deeply.") from None
