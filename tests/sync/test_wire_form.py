"""A record's wire form, compiled from its serializer, equals DRF's own rendering of it."""

from __future__ import annotations

import datetime as dt
import decimal
import json
import uuid
import zoneinfo
from typing import Any

import pytest
from django.db import models
from rest_framework import serializers

from apps.accounts.models import Program
from apps.sync import registry

NEW_YORK = zoneinfo.ZoneInfo("America/New_York")


def _value(field: models.Field[Any, Any], variant: int) -> Any:
    if field.null and variant == 1:
        return None
    if isinstance(field, (models.UUIDField, models.ForeignKey)):
        return uuid.uuid4()
    if isinstance(field, models.DateTimeField):
        # A time in another zone, one in UTC, and a naive one: each rendered in the server's zone.
        return [
            dt.datetime(2026, 3, 8, 1, 59, 30, 120, tzinfo=NEW_YORK),
            dt.datetime(2026, 11, 20, 14, 5, tzinfo=dt.UTC),
            dt.datetime(2026, 11, 20, 14, 5, 1),
        ][variant]
    if isinstance(field, models.DateField):
        return dt.date(1990, 2, 3)
    if isinstance(field, models.BooleanField):
        return variant == 0
    if field.choices:
        return field.choices[variant % len(field.choices)][0] if variant < 2 else ""
    if isinstance(field, (models.CharField, models.TextField)):
        return ['Calm, oriented; \u00e9t\u00e9 "quoted"', "", "x"][variant]
    if isinstance(field, (models.IntegerField, models.DecimalField, models.FloatField)):
        return variant
    return None


def _record(model: type[models.Model], variant: int) -> models.Model:
    record = model()
    for field in model._meta.concrete_fields:
        value = _value(field, variant)
        if value is not None or field.null:
            setattr(record, field.attname, value)
    return record


def _with_related(record: models.Model, serializer: Any, variant: int) -> None:
    """Give the record, in memory, the related rows a wire field reads through
    (``assignment.unit_id``)."""
    for wire_field in serializer.fields.values():
        if len(wire_field.source_attrs) == 2:
            relation, _attribute = wire_field.source_attrs
            related_model = record._meta.get_field(relation).related_model
            assert isinstance(related_model, type)
            setattr(record, relation, _record(related_model, variant))


@pytest.mark.parametrize("variant", [0, 1, 2])
@pytest.mark.parametrize("synced_type", registry.all_types(), ids=lambda synced_type: synced_type.name)
def test_the_compiled_wire_form_is_drfs(synced_type: registry.SyncedType, variant: int) -> None:
    record = _record(synced_type.model, variant)
    serializer = registry.bound_serializer(synced_type.serializer, partial=False)
    _with_related(record, serializer, variant)
    drf = json.loads(json.dumps(serializer.to_representation(record)))

    assert synced_type.to_wire(record) == drf


def test_a_field_the_plan_does_not_know_goes_through_drf() -> None:
    class Odd(serializers.Serializer[Any]):
        amount = serializers.DecimalField(max_digits=5, decimal_places=2)

    class Row:
        amount = decimal.Decimal("1.5")

    assert registry.representation(Odd)(Row()) == {"amount": "1.50"}


@pytest.mark.parametrize("synced_type", registry.all_types(), ids=lambda synced_type: synced_type.name)
def test_every_type_says_where_a_new_records_program_comes_from(synced_type: registry.SyncedType) -> None:
    # A refused create is reviewed by that program's supervisors (apps.sync.push).
    assert synced_type.program_from is not None
    model, field_name = synced_type.program_from
    wire_field = synced_type.serializer().fields[field_name]
    assert isinstance(wire_field, serializers.UUIDField) and not wire_field.read_only
    *path, last = synced_type.program_lookup.split("__")
    for step in path:  # e.g. an assignment's incident__program_id
        related = model._meta.get_field(step).related_model
        assert isinstance(related, type)
        model = related
    assert last == "program_id" and model._meta.get_field("program").related_model is Program
