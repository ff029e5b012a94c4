"""A mutation's payload hash is made of the standard library's sorted, compact JSON text:
whatever writes it, the bytes must not change, or a replay across an upgrade would no longer
be recognised as one."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from apps.sync.push import _canonical


def standard_library_text(value: Any) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), default=str).encode()


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(), children, max_size=4),
    max_leaves=20,
)


@settings(max_examples=800, deadline=None)
@given(json_values)
def test_the_canonical_text_is_the_standard_librarys_for_any_json_value(value: Any) -> None:
    assert _canonical(value) == standard_library_text(value)


@pytest.mark.parametrize(
    "value",
    [
        {
            "mutation_id": 3,
            "type": "care.encounter",
            "id": "3f1c2d9e-1111-4222-8333-94445555666e",
            "op": "update",
            "base_version": 1,
            "fields": {"disposition": "referred", "assessment": "Calm; re-assessed at 14:05."},
            "observed_at": "2026-11-20T14:30:00+00:00",
        },
        {"fields": {"score": 1e-05, "other": 2.5e-7, "big": 1e16, "plain": 0.5, "neg": -0.0}},
        {"fields": {"overflowed": float("inf"), "low": float("-inf"), "nan": float("nan")}},
        {"fields": {"absent": None, "text": "null", "list": [None, 1, "x"]}},
        {"fields": {"del": "a\x7fb", "control": "\x00\x1f\n\t\x08\x0c", "quote": '"\\/'}},
        {"fields": {"accent": "Señora Ortiz", "line separator": "\u2028", "lone surrogate": "\ud800"}},
        {"fields": {"huge": 2**64, "unsigned": 2**64 - 1, "lowest": -(2**63)}},
        {"b": 1, "a": {"d": [1, 2.5, True], "c": "x"}, "A": [], "_": {}},
    ],
)
def test_the_canonical_text_is_the_standard_librarys_where_orjson_writes_otherwise(value: Any) -> None:
    assert _canonical(value) == standard_library_text(value)
