"""The API's JSON parser: DRF's, refusing JSON nested too deeply, or a number beyond a
double's range, with a 400.

No request of this API nests more than a few levels (a push: the body, its list of
mutations, a mutation, its fields, a value). Deeper JSON only costs: a body of a few
thousand ``[`` in a row (a few kilobytes, well within the size limit) made the standard
library's parser raise ``RecursionError``, which DRF does not turn into a parse error, and
a few hundred levels parsed but overflowed the recursion of what reads the data next (the
sealing of a push's stored copy). Both surfaced as a 500, which a client retries forever.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import IO, Any

from rest_framework import parsers
from rest_framework.exceptions import ParseError

MAX_NESTING = 32


class JSONParser(parsers.JSONParser):
    def parse(
        self, stream: IO[Any], media_type: str | None = None, parser_context: Mapping[str, Any] | None = None
    ) -> Any:
        try:
            data = super().parse(stream, media_type, parser_context)
        except RecursionError:
            raise _too_deep() from None
        if _nested_deeper_than(data, MAX_NESTING):
            raise _too_deep()
        if _holds_infinity(data):
            raise ParseError("JSON parse error - a number too large for a double (such as 1e400).")
        return data


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


def _holds_infinity(value: Any) -> bool:
    """Whether a number overflowed to infinity: the standard library reads 1e400 as inf,
    which DRF's strict mode (that refuses the literal Infinity) lets through, and a text
    field would then store "inf"."""
    pending = [value]
    while pending:
        item = pending.pop()
        kind = type(item)
        if kind is float:
            if not math.isfinite(item):
                return True
        elif kind is dict:
            pending.extend(item.values())
        elif kind is list:
            pending.extend(item)
    return False
