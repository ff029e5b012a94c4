"""The API's JSON parser: DRF's, refusing JSON nested too deeply, or a number beyond a
double's range, with a 400.

No request of this API nests more than a few levels (a push: the body, its list of
mutations, a mutation, its fields, a value). Deeper JSON only costs: a body of a few
thousand ``[`` in a row (a few kilobytes, well within the size limit) made the standard
library's parser raise ``RecursionError``, which DRF does not turn into a parse error, and
a few hundred levels parsed but overflowed the recursion of what reads the data next (the
sealing of a push's stored copy). Both surfaced as a 500, which a client retries forever.

The standard library reads ``1e400`` as infinity, which DRF's strict mode (refusing the
literals ``NaN`` and ``Infinity``) lets through, and a text field would store ``"inf"``.

A body is read in the charset its Content-Type names, and only in a Unicode one (JSON's own):
Python's codecs include compressions (``charset=zlib``), which turned a body of a few
kilobytes into gigabytes past the size limit, and transforms that failed as a 500; a
legacy charset (latin-1) would garble every non-ASCII character of a UTF-8 body unseen.
"""

from __future__ import annotations

import codecs
import json
import math
import sys
from collections.abc import Mapping
from typing import IO, Any

from django.conf import settings
from rest_framework import parsers
from rest_framework.exceptions import ParseError, UnsupportedMediaType
from rest_framework.utils.json import strict_constant

MAX_NESTING = 32
# By the names Python's codecs give them; JSON is UTF-8, and in its first form UTF-16 or 32.
# ASCII is UTF-8's first half: a byte beyond it is refused, never read as something else.
UNICODE_CHARSETS = frozenset(
    {"utf-8", "utf-8-sig", "utf-16", "utf-16-le", "utf-16-be", "utf-32", "utf-32-le", "utf-32-be", "ascii"}
)


def strict_loads(text: str) -> Any:
    """JSON text as the API reads it: no ``NaN`` or ``Infinity``, no number beyond a double.
    Raises ``ValueError`` (``RecursionError`` for nesting beyond the parser)."""
    return json.loads(text, parse_constant=strict_constant, parse_float=_finite)


def _worded(error: ValueError) -> str:
    # Beyond Python's limit on a whole number's digits, int() names an interpreter setting to
    # change, for a programmer. Told apart by its words: a parse_int hook of our own would
    # cost every number of every push.
    if "int_max_str_digits" in str(error):
        return f"a whole number of more than {sys.get_int_max_str_digits()} digits"
    return str(error)


def _finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"{text[:20]} is beyond a double's range")
    return value


class JSONParser(parsers.JSONParser):
    def parse(
        self, stream: IO[Any], media_type: str | None = None, parser_context: Mapping[str, Any] | None = None
    ) -> Any:
        encoding = (parser_context or {}).get("encoding", settings.DEFAULT_CHARSET)
        if _codec_name(encoding) not in UNICODE_CHARSETS:
            raise UnsupportedMediaType(
                media_type or "", detail=f"charset {encoding[:40]!r}: send JSON in UTF-8 (charset=utf-8, or none)."
            )
        try:
            data = json.load(codecs.getreader(encoding)(stream), parse_constant=strict_constant, parse_float=_finite)
        except RecursionError:
            raise _too_deep() from None
        except ValueError as error:
            raise ParseError(f"JSON parse error - {_worded(error)}") from None
        if _nested_deeper_than(data, MAX_NESTING):
            raise _too_deep()
        return data


def _codec_name(encoding: str) -> str | None:
    try:
        return codecs.lookup(encoding).name
    except LookupError:
        return None


def _too_deep() -> ParseError:
    return ParseError(f"JSON parse error - nested deeper than {MAX_NESTING} levels.")


def _nested_deeper_than(value: Any, limit: int) -> bool:
    # Iterative: the point is not to recurse as deep as the data goes.
    pending = [(value, 1)] if type(value) is dict or type(value) is list else []
    while pending:
        container, depth = pending.pop()
        if depth > limit:
            return True
        for child in container.values() if type(container) is dict else container:
            if type(child) is dict or type(child) is list:
                pending.append((child, depth + 1))
    return False
