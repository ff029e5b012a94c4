"""The API's JSON renderer: DRF's output, written by orjson.

A push's answer carries hundreds of results, and DRF's renderer (the standard library's
encoder) was a visible part of its time. This one writes the same text: compact UTF-8,
values orjson has no native form for (times, lazy strings, decimals) converted by DRF's own
encoder, U+2028 and U+2029 escaped. A pretty-printed answer (``; indent=`` in Accept) or a
value orjson refuses goes to DRF's renderer; an answer holding a lone surrogate (a request's
own text, named back in an error) is written escaped as ASCII. One difference: a float NaN
or infinity is written as null, where DRF's renderer fails.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson
from rest_framework import renderers
from rest_framework.utils import encoders

_OPTIONS = orjson.OPT_PASSTHROUGH_DATETIME | orjson.OPT_NON_STR_KEYS
_LINE_SEPARATORS = ("\u2028".encode(), "\u2029".encode())


class JSONRenderer(renderers.JSONRenderer):
    def render(
        self, data: Any, accepted_media_type: str | None = None, renderer_context: Mapping[str, Any] | None = None
    ) -> bytes:
        if data is None:
            return b""
        pretty = self.get_indent(accepted_media_type or "", renderer_context or {}) is not None
        if pretty or not self.compact or self.ensure_ascii:
            return self._render_by_drf(data, accepted_media_type, renderer_context)
        try:
            text = orjson.dumps(data, default=encoders.JSONEncoder().default, option=_OPTIONS)
        except orjson.JSONEncodeError:
            return self._render_by_drf(data, accepted_media_type, renderer_context)
        if _LINE_SEPARATORS[0] in text or _LINE_SEPARATORS[1] in text:
            text = text.replace(_LINE_SEPARATORS[0], b"\\u2028").replace(_LINE_SEPARATORS[1], b"\\u2029")
        return text

    def _render_by_drf(
        self, data: Any, accepted_media_type: str | None, renderer_context: Mapping[str, Any] | None
    ) -> bytes:
        try:
            return super().render(data, accepted_media_type, renderer_context)
        except UnicodeEncodeError:
            # A lone surrogate from the request, named back in an error, has no UTF-8 form:
            # escaped (\ud800), as JSON allows, the answer is still written.
            return _AsciiJSONRenderer().render(data, accepted_media_type, renderer_context)


class _AsciiJSONRenderer(renderers.JSONRenderer):
    ensure_ascii = True
