"""Incoming wire fields, checked by the plan compiled from each serializer, come out exactly
as DRF's validation makes them; whatever the plan cannot vouch for goes to DRF."""

from __future__ import annotations

import dataclasses
import datetime as dt
import uuid
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from rest_framework import serializers

from apps.common.api.serializers import StrictSerializer
from apps.sync import registry
from tests.sync.helpers import OTHER_SPELLINGS, respelt

MOMENTS = [
    "2026-11-20T14:05:00+00:00",
    "2026-11-20T14:05:00Z",
    "2026-03-08T01:59:30.000120-05:00",
    "2026-11-20T14:05:00",  # naive: DRF makes it aware in the server's zone
    "2026-11-20",
    "0001-01-01T00:00:00+14:00",  # out of range once moved to the server's zone
    "1850-06-01T09:00:00Z",  # a real time, but none a crisis response record names
    "3000-01-01T00:00:00Z",
    "20261120T140500Z",
    "soon",
    "2026-11-20T14:05:00Z\x00 or later",  # Python's parser stops reading at the NUL
    "٢٠٢٦-11-20T14:05:00Z",  # Django's parser reads any script's digits
]
TEXTS = ['Calm, oriented; été "quoted"', "", "   ", "  padded  ", "a\x00b", "bad \ud800 half", "x" * 301, "\t\n"]


def _values(wire_field: serializers.Field[Any, Any, Any, Any]) -> st.SearchStrategy[Any]:
    """Values a device might send for this field: mostly good ones (so that whole changes
    pass), and every kind of bad one."""
    anything: st.SearchStrategy[Any] = st.sampled_from([None, 7, 1.5, True, [], {}, "", "  "])
    if isinstance(wire_field, serializers.ChoiceField):
        good: st.SearchStrategy[Any] = st.sampled_from(list(wire_field.choice_strings_to_values))
        bad = st.one_of(st.sampled_from(["bogus", "REFERRED", 1]), anything)
    elif isinstance(wire_field, serializers.UUIDField):
        good = st.uuids().map(str)
        bad = st.one_of(
            st.just("not-a-uuid"),
            st.tuples(st.uuids(), st.sampled_from(list(OTHER_SPELLINGS.values()))).map(lambda pair: pair[1](pair[0])),
            anything,
        )
    elif isinstance(wire_field, serializers.DateTimeField):
        good = st.sampled_from(MOMENTS[:3])
        bad = st.one_of(st.sampled_from(MOMENTS[3:]), anything)
    elif isinstance(wire_field, serializers.DateField):
        good = st.just("1990-02-03")
        bad = st.one_of(st.sampled_from(["1990-02-30", "03/02/1990", "\uff11\uff19\uff19\uff10-02-03"]), anything)
    elif isinstance(wire_field, serializers.BooleanField):
        good = st.booleans()
        bad = st.one_of(st.sampled_from(["true", 1, 0]), anything)
    else:
        good = st.text(max_size=12)
        bad = st.one_of(st.sampled_from(TEXTS), anything)
    return st.one_of(good, good, good, bad)


@st.composite
def _wire_fields(draw: st.DrawFn, serializer: serializers.Serializer[Any]) -> dict[str, Any]:
    data: dict[str, Any] = {}
    for name, wire_field in serializer.fields.items():
        if draw(st.integers(0, 3)):  # mostly present; sometimes left out
            data[name] = draw(_values(wire_field))
    if draw(st.integers(0, 9)) == 0:
        data["unexpected"] = "x"
    return data


def _through_drf(serializer: serializers.Serializer[Any], data: dict[str, Any]) -> dict[str, Any] | None:
    try:
        return dict(serializer.run_validation(data))
    except serializers.ValidationError:
        return None


def _exactly(values: dict[str, Any]) -> list[tuple[str, str]]:
    """Equal and of the same kind (a time in the same zone, not just the same instant)."""
    return [(name, f"{type(value).__name__}:{value!r}") for name, value in values.items()]


@pytest.mark.parametrize("partial", [False, True], ids=["create", "update"])
@pytest.mark.parametrize("synced_type", registry.all_types(), ids=lambda synced_type: synced_type.name)
# 150 cases per type and operation: 300 cost the suite half a minute more on two cores.
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_what_the_plan_accepts_is_exactly_what_drf_makes_of_it(
    synced_type: registry.SyncedType, partial: bool, data: st.DataObject
) -> None:
    serializer = registry.bound_serializer(synced_type.serializer, partial=partial)
    fields = data.draw(_wire_fields(serializer))

    compiled = registry.validation(synced_type.serializer, partial=partial)(fields)

    if compiled is not None:
        drf = _through_drf(serializer, fields)
        assert drf is not None, f"the plan accepted what DRF refuses: {fields!r}"
        assert _exactly(compiled) == _exactly(drf)


def _good_value(wire_field: serializers.Field[Any, Any, Any, Any]) -> Any:
    if isinstance(wire_field, serializers.ChoiceField):
        return next(iter(wire_field.choice_strings_to_values))
    if isinstance(wire_field, serializers.UUIDField):
        return str(uuid.uuid4())
    if isinstance(wire_field, serializers.DateTimeField):
        return "2026-11-20T14:05:00+00:00"
    if isinstance(wire_field, serializers.DateField):
        return "1990-02-03"
    if isinstance(wire_field, serializers.BooleanField):
        return True
    return "  Safety plan reviewed.  "


@pytest.mark.parametrize("partial", [False, True], ids=["create", "update"])
@pytest.mark.parametrize("synced_type", registry.all_types(), ids=lambda synced_type: synced_type.name)
def test_every_synced_type_checks_a_well_formed_change_without_drf(
    synced_type: registry.SyncedType, partial: bool
) -> None:
    serializer = registry.bound_serializer(synced_type.serializer, partial=partial)
    fields = {
        name: _good_value(wire_field) for name, wire_field in serializer.fields.items() if not wire_field.read_only
    }

    compiled = registry.validation(synced_type.serializer, partial=partial)(fields)

    assert compiled is not None
    assert _exactly(compiled) == _exactly(dict(serializer.run_validation(fields)))


def test_a_serializer_with_checks_of_its_own_always_goes_through_drf() -> None:
    class WithHook(serializers.Serializer[Any]):
        body = serializers.CharField()

        def validate_body(self, value: str) -> str:
            return value.upper()

    class WithOddField(serializers.Serializer[Any]):
        amount = serializers.DecimalField(max_digits=5, decimal_places=2)

    assert registry.validation(WithHook, partial=False)({"body": "x"}) is None
    assert registry.validation(WithOddField, partial=False)({"amount": "1.50"}) is None


def test_the_plan_fills_in_defaults_as_drf_does() -> None:
    class WithDefaults(serializers.Serializer[Any]):
        kind = serializers.ChoiceField(choices=["a", "b"], required=False, default="a")
        when = serializers.DateTimeField(required=False, default=None, allow_null=True)
        optional = serializers.CharField(required=False)
        started = serializers.DateTimeField(required=False, default=lambda: dt.datetime(2026, 1, 1, tzinfo=dt.UTC))

    check = registry.validation(WithDefaults, partial=False)

    assert check({}) == {"kind": "a", "when": None, "started": dt.datetime(2026, 1, 1, tzinfo=dt.UTC)}
    assert check({"optional": "  "}) is None  # blank where blank is not allowed: DRF words the error


def _id_fields(synced_type: registry.SyncedType) -> list[str]:
    serializer = registry.bound_serializer(synced_type.serializer, partial=False)
    return [
        name
        for name, wire_field in serializer.fields.items()
        if isinstance(wire_field, serializers.UUIDField) and not wire_field.read_only
    ]


@respelt
@pytest.mark.parametrize(
    ("synced_type", "name"),
    [(synced_type, name) for synced_type in registry.all_types() for name in _id_fields(synced_type)],
    ids=lambda value: value.name if isinstance(value, registry.SyncedType) else value,
)
def test_an_id_spelt_otherwise_than_the_server_writes_it_is_refused_by_the_plan_and_by_drf(
    synced_type: registry.SyncedType, name: str, respell: Callable[[uuid.UUID], str]
) -> None:
    """The record would come back naming the id as the server writes it, not as the device
    holds it."""
    serializer = registry.bound_serializer(synced_type.serializer, partial=True)
    fields = {name: respell(uuid.uuid4())}

    compiled = registry.validation(synced_type.serializer, partial=True)(fields)

    assert compiled is None
    with pytest.raises(serializers.ValidationError) as refused:
        serializer.run_validation(fields)
    assert refused.value.detail == {name: ["Must be a UUID written in lowercase, 8-4-4-4-12 hex digits."]}


def test_a_record_type_whose_wire_takes_an_id_in_any_spelling_cannot_register(monkeypatch: pytest.MonkeyPatch) -> None:
    class LooseWire(StrictSerializer):
        encounter_id = serializers.UUIDField()

    monkeypatch.setattr(registry, "_registry", dict(registry._registry))
    encounters = registry.get("care.encounter")
    assert encounters is not None

    with pytest.raises(ValueError, match="'encounter_id' takes an id in any spelling"):
        registry.register(dataclasses.replace(encounters, name="test.loose", serializer=LooseWire))

    assert registry.get("test.loose") is None
