"""The fast JSON writers give the text the standard library (and DRF) would."""

from __future__ import annotations

import datetime as dt
import decimal
import json
import uuid
from typing import Any

import pytest
from django.db import models
from django.utils.translation import gettext_lazy
from rest_framework import renderers as drf_renderers
from rest_framework import serializers
from rest_framework.utils.serializer_helpers import ReturnDict, ReturnList

from apps.common import jsontext
from apps.common.api.renderers import JSONRenderer


class Colour(models.TextChoices):
    RED = "red", "Red"


ANSWERS: list[Any] = [
    {"results": [{"id": str(uuid.uuid4()), "status": "applied", "version": 3, "data": {"body": "Naïve ✓"}}]},
    {"at": dt.datetime(2026, 12, 4, 5, 0, 0, 123456, tzinfo=dt.UTC), "on": dt.date(2026, 12, 4)},
    {"at": dt.datetime(2026, 12, 4, 5, 0, tzinfo=dt.timezone(dt.timedelta(hours=-5))), "time": dt.time(14, 5, 1)},
    {"id": uuid.uuid4(), "amount": decimal.Decimal("12.50"), "label": gettext_lazy("Resolved on scene")},
    {"colour": Colour.RED, "flags": [True, False, None], "ratio": 0.1, "count": 2**40},
    {"huge": 2**70, "list": ReturnList([1, 2], serializer=serializers.Serializer())},
    ReturnDict({"line": "one\u2028two\u2029three", 7: "an int key"}, serializer=serializers.Serializer()),
    [],
    "text",
]


@pytest.mark.parametrize("answer", ANSWERS)
def test_the_api_renderer_writes_what_drfs_renderer_writes(answer: Any) -> None:
    assert JSONRenderer().render(answer) == drf_renderers.JSONRenderer().render(answer)


def test_a_pretty_printed_answer_is_drfs() -> None:
    answer = {"a": [1, 2]}
    media_type = "application/json; indent=4"
    assert JSONRenderer().render(answer, media_type) == drf_renderers.JSONRenderer().render(answer, media_type)
    assert b"\n    " in JSONRenderer().render(answer, media_type)


@pytest.mark.parametrize(
    "value",
    [
        {"body": "Naïve note ✓", "n": 3, "tags": ["a", None], "ok": True, "ratio": 0.25},
        [{"id": "x", "version": 1}, {"id": "y", "version": 2}],
        {"base_version": 2**80},  # a client may send an integer beyond 64 bits
    ],
)
def test_stored_documents_are_the_standard_librarys_compact_text(value: Any) -> None:
    assert jsontext.dumps(value) == json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def test_a_batch_rows_ids_and_times_are_written_alike_with_or_without_a_huge_integer() -> None:
    row = {
        "id": uuid.uuid4(),
        "at": dt.datetime(2026, 12, 4, 5, 0, 0, 123456, tzinfo=dt.UTC),
        "on": dt.date(2026, 12, 4),
        "when": dt.time(14, 5, 1),
    }
    expected = {
        "id": str(row["id"]),
        "at": "2026-12-04T05:00:00.123456+00:00",
        "on": "2026-12-04",
        "when": "14:05:01",
    }

    assert json.loads(jsontext.dumps([row])) == [expected]
    assert json.loads(jsontext.dumps([{**row, "huge": 2**70}])) == [{**expected, "huge": 2**70}]  # the fallback
    with pytest.raises(TypeError):
        jsontext.dumps({"huge": 2**70, "other": object()})
