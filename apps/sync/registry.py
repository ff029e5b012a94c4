"""The registry of synced record types: what a domain app tells the sync mechanism.

A domain app registers each record type it syncs in its ``AppConfig.ready()``::

    register(SyncedType(name="care.encounter", model=Encounter, serializer=EncounterWire, ...))

The mechanism then stores, merges, versions and feeds those records without knowing what
an encounter is: the app says which wire fields exist and which of them are clinical text,
which scopes may see a record, who may write it, and how a change is applied (through the
app's own services). Adding a record type to sync is a registration, never a change here.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any
from uuid import UUID

from django.core.validators import MaxLengthValidator, ProhibitNullCharactersValidator
from django.db import models
from django.utils import timezone
from django.utils.dateparse import parse_date, parse_datetime
from rest_framework import ISO_8601, serializers
from rest_framework.settings import api_settings
from rest_framework.validators import ProhibitSurrogateCharactersValidator

from apps.accounts.models import Device, User
from apps.audit.services import Accessor
from apps.common import bulk, calendar
from apps.common.api.serializers import CanonicalUUIDField, IsoDateField, OffsetDateTimeField, StrictSerializer
from apps.common.ids import canonical_uuid


class Refused(Exception):
    """A domain rule refuses a change (a signed note's text, an append-only event).

    Raised by ``apply`` before it writes anything; the mutation is quarantined with this
    code, kept for a person, and the rest of the batch goes on.
    """

    def __init__(self, code: str, detail: str, field: str | None = None) -> None:
        super().__init__(detail)
        self.code = code
        self.detail = detail
        self.field = field


_PROGRAM_ROLES = "sync.program_roles"


@dataclass
class WriteContext:
    """Who is writing, from where, plus a per-batch cache apps may use for lookups."""

    user: User
    device: Device | None
    cache: dict[Any, Any] = field(default_factory=dict)
    # The push's apps.sync.services.Publisher: a change that also changes another synced
    # record (an outcome event changes its referral's status) publishes that record into it.
    publisher: Any = None
    # New rows handed to insert_later, written in bulk with the rest of the batch.
    pending_inserts: list[models.Model] = field(default_factory=list)
    # Changed rows handed to update_later: the record, and the fields to write.
    pending_updates: dict[tuple[type[models.Model], Any], tuple[models.Model, set[str]]] = field(default_factory=dict)
    # The cache's records the writer read under their locks, or wrote (under them, as every
    # write is): what it holds of these is current, and the instance the writer changes.
    current: set[tuple[type[models.Model], Any]] = field(default_factory=set)
    # Who writes, for the audit trail, where a write made on the server (a conflict resolved)
    # audits in the domain what it writes beyond the record it was asked to write (a move of
    # an encounter, everything under it), and the ids of the records so audited.
    accessor: Accessor | None = None
    audited: set[UUID] = field(default_factory=set)

    def program_roles(self) -> list[tuple[UUID, str]]:
        """The writer's (program id, role) pairs, read once per batch: the sync mechanism
        and the apps' write rules both ask."""
        roles = self.cache.get(_PROGRAM_ROLES)
        if roles is None:
            roles = self.cache[_PROGRAM_ROLES] = list(self.user.memberships.values_list("program_id", "role"))
        return roles

    def cached(self, model: type[models.Model], record_id: UUID | None) -> Any:
        """The record of ``model`` with this id (None if there is none), read once per batch."""
        if record_id is None:
            return None
        key = (model, record_id)
        if key not in self.cache:
            self.cache[key] = model._default_manager.filter(pk=record_id).first()
        return self.cache[key]

    def preload(
        self,
        model: type[models.Model],
        record_ids: Iterable[UUID],
        *,
        defer: Iterable[str] = (),
        only: Iterable[str] | None = None,
    ) -> None:
        """Read every record of ``model`` a batch will look up, in one query: all their
        columns but ``defer``, or ``only`` these (a record read in part is read again by a
        later preload that wants more)."""
        defer = set(defer)
        missing = [
            record_id
            for record_id in set(record_ids)
            if (model, record_id) not in self.cache
            or (only is None and not _read_beyond(self.cache[(model, record_id)], defer))
        ]
        if not missing:
            return
        found_in = model._default_manager.filter(pk__in=bulk.any_of(missing, "uuid"))
        found = {record.pk: record for record in (found_in.only(*only) if only is not None else found_in.defer(*defer))}
        for record_id in missing:
            self.cache[(model, record_id)] = found.get(record_id)

    def remember(self, record: models.Model) -> None:
        """Keep the cache in step with a record the batch has just written, or has read under
        its lock: later lookups get this instance."""
        key = (type(record), record.pk)
        self.cache[key] = record
        self.current.add(key)

    def parent(self, model: type[models.Model], record_id: UUID, field: str) -> Any:
        """The live record a change refers to, or a refusal naming the field."""
        parent = self.cached(model, record_id)
        if parent is None or getattr(parent, "is_deleted", False):
            raise Refused("parent_not_found", f"No such {model._meta.verbose_name} {record_id}.", field=field)
        return parent

    def locked_parent(self, model: type[models.Model], record_id: UUID, field: str) -> Any:
        """``parent``, for a change that also writes it (an outcome sets its referral's status):
        the record as it stands under its lock, taken here unless the writer holds it. A copy
        read before (a batch reads its parents at once) may miss a colleague's committed edit,
        which publishing it would undo. Later lookups get this instance, so a later change of
        the record in the batch keeps what this one wrote."""
        key = (model, record_id)
        if key not in self.current:
            from apps.sync.services import lock_records  # it imports this module

            lock_records([record_id])
            self.cache.pop(key, None)
            self.current.add(key)
        return self.parent(model, record_id, field)

    def insert_later(self, record: models.Model) -> None:
        """Insert a new record with the batch's bulk writes (at once outside a push).

        For records nothing else in the same apply reads back from the database.
        """
        if self.publisher is None:
            record.save(force_insert=True)
        else:
            self.pending_inserts.append(record)

    def update_later(self, record: models.Model, fields: Iterable[str]) -> None:
        """Save these fields of an existing record with the batch's bulk writes (at once
        outside a push). The in-memory record is what later changes of the batch see."""
        if self.publisher is None:
            record.save(update_fields=list(fields))
            return
        key = (type(record), record.pk)
        _record, pending = self.pending_updates.get(key, (record, set()))
        self.pending_updates[key] = (record, pending | set(fields))

    def flush_inserts(self) -> None:
        """Write the pending inserts, then the pending updates: one statement per model
        (and per set of changed fields)."""
        by_model: dict[type[models.Model], list[models.Model]] = {}
        for record in self.pending_inserts:
            by_model.setdefault(type(record), []).append(record)
        for records in by_model.values():
            bulk.insert(records)
        self.pending_inserts = []
        by_fields: dict[tuple[type[models.Model], tuple[str, ...]], list[models.Model]] = {}
        for record, fields in self.pending_updates.values():
            by_fields.setdefault((type(record), tuple(sorted(fields))), []).append(record)
        for (_model, names), records in by_fields.items():
            bulk.update(records, names)
        self.pending_updates = {}


def _read_beyond(record: models.Model | None, defer: set[str]) -> bool:
    """Whether a cached record was read with every column but these (a missing one, None, is)."""
    return record is None or record.get_deferred_fields() <= defer


@dataclass(frozen=True)
class Change:
    """One change for ``apply``: internal (validated) values of the fields to write."""

    operation: str  # create, update, delete
    record_id: UUID
    record: models.Model | None  # the current record; None for a create
    values: dict[str, Any]


@dataclass(frozen=True)
class IncomingWrite:
    """A mutation about to be applied, as ``SyncedType.lock_before_writing`` sees it: read
    from what the device sent, not validated yet."""

    writer_id: UUID  # the user it applies as, whose permissions decide it
    operation: str  # create, update, delete
    fields: dict[str, Any]  # its wire fields as sent


@dataclass(frozen=True)
class SyncedType:
    name: str
    model: type[models.Model]
    # Validates incoming wire fields (partial for updates); its read-only fields are ignored.
    serializer: type[serializers.Serializer[Any]]
    # The record's wire form: what the feed, the snapshot and the merge see.
    to_wire: Callable[[Any], dict[str, Any]]
    # Which scopes may see the record now (they change when the record moves).
    scopes_of: Callable[[Any], Iterable[str]]
    program_id_of: Callable[[Any], UUID]
    # May this user write this record (None: create with these values)?
    may_write: Callable[[WriteContext, Any | None, dict[str, Any]], bool]
    # Applies a change through the domain app's services and returns the saved record.
    # Must raise Refused before writing when a rule refuses the change.
    apply: Callable[[WriteContext, Change], Any]
    # Optional: raises Refused when a rule refuses every change of this existing record, whatever
    # its values (a signed note, an append-only record): (context, record, operation, values).
    # A change the merge keeps whole as a conflict never reaches ``apply``, and must not be
    # held for a case manager as if it could apply.
    refuses_change: Callable[[WriteContext, Any, str, dict[str, Any]], None] | None = None
    # Optional: whether a create that meets this existing record under its id is a retry of it
    # as it stands, though its values differ from the record's wire form (a status time
    # reported over REST without a time, then sent with the outbox with the device's):
    # (record, the create's validated values). The push answers it applied at the record's
    # version, with its data, and writes nothing; without it, such a create merges as an
    # update with no base.
    create_repeats: Callable[[Any, dict[str, Any]], bool] | None = None
    # Optional: writes the device's side of a conflict a case manager chose, where this type's
    # own rules refuse the case manager's change (a note: only its author edits a draft, and a
    # signed note takes an addendum instead): (the case manager's context, the change of the
    # record as it stands under its lock, the device's writer). Writes through the app's
    # services and publishes what it wrote; returns the records written, (type, id,
    # operation: create, update or delete). Raises Refused before writing when a rule
    # refuses. Without it, ``apply`` writes the change.
    take_device_value: Callable[[WriteContext, Change, User], list[tuple[str, UUID, str]]] | None = None
    # Wire fields holding clinical text: never overwritten by a concurrent edit.
    clinical_text_fields: frozenset[str] = frozenset()
    # Wire fields whose change vouches for other fields' values, by field (a note's
    # ``signed_at`` for its ``body``): a change of one applies only where those hold what
    # its device had; otherwise it is kept as a conflict (apps.sync.merge).
    attests: dict[str, frozenset[str]] = field(default_factory=dict, hash=False)
    # Wire fields holding health information (clinical text, who a person is): sealed in
    # every copy sync stores (apps.sync.sealing). Clinical text fields always are.
    health_fields: frozenset[str] = frozenset()
    # Table name for WatermelonDB clients.
    watermelon_table: str = ""
    # Clinical records are soft-deleted and, for WatermelonDB, deleted by a flag.
    is_clinical: bool = True
    # Optional: called once per batch with the incoming fields of every mutation of this
    # type, so the app can load what it will look up (parents) in one query per table.
    prepare: Callable[[WriteContext, list[dict[str, Any]]], None] | None = None
    # Optional: takes the app's own locks that applying these incoming mutations of this type
    # waits for, and that a writer must hold before its transaction's first write, as it
    # holds the records' (dispatch: a status time's unit board, whose entries are served in
    # transaction order as the feed's are). Sync calls it once per apply, before that first
    # write and before the records' locks, each type's in registration order: the usual
    # push, the push's apply of stored mutations (and its fallback, one mutation per
    # transaction), the sweep of stranded mutations, and a supervisor's review (its
    # mutations span several writers). Conflict resolution (services.resolve, which writes
    # through ``apply``) does not call it: a type whose ``apply`` needs these locks must
    # refuse every change a conflict can keep (``refuses_change``), as a status time does.
    # It only reads (a read takes no transaction id), and takes only what the mutation's
    # writer may do, by the rule ``may_write`` applies: a device must not hold another
    # unit's lock by naming its record. What it cannot read, or the writer may not do, it
    # passes over: the apply refuses it later. Each type's call runs as statements of its
    # own, so its locks must be in a namespace of their own (never the records' of
    # services.lock_records, nor another type's), taken in one fixed order.
    lock_before_writing: Callable[[list[IncomingWrite]], None] | None = None
    # Where a new record's program comes from: a model with a ``program_id`` (its unit, its
    # parent record) and the wire field naming its row. A refused create is then reviewed by
    # that program's supervisors.
    program_from: tuple[type[models.Model], str] | None = None
    # The lookup from that model's row to its program's id, where the row has no program_id.
    program_lookup: str = "program_id"
    # The wire field naming the record a new one is placed under and takes its unit from (a
    # note's encounter, an outcome's referral). A push takes that record's lock with its
    # batch's, as a move of it to another unit does: the create reads where the parent is
    # once no move of it is under way, and a move finds every record created before it.
    parent_field: str = ""

    def writable_fields(self) -> set[str]:
        return {name for name, wire_field in self.serializer().fields.items() if not wire_field.read_only}


_ID_FIELDS = (serializers.UUIDField, CanonicalUUIDField)
# Fields the compiled plan reads as DRF's DateTimeField: the offset field refuses only what
# the plan already hands to DRF (a time without an offset).
_MOMENT_FIELDS = (serializers.DateTimeField, OffsetDateTimeField)
# Likewise DRF's DateField: the ISO one refuses only what the plan hands to DRF (another script's digits).
_DATE_FIELDS = (serializers.DateField, IsoDateField)


@functools.lru_cache(maxsize=256)
def bound_serializer(serializer_class: type[serializers.Serializer[Any]], *, partial: bool) -> Any:
    """One reusable serializer per type and mode: building one per record costs a deep copy
    of every field, which dominated a batch's time."""
    serializer = serializer_class(partial=partial)
    for wire_field in serializer.fields.values():  # build and bind the fields once
        if isinstance(wire_field, serializers.DateTimeField) and not hasattr(wire_field, "timezone"):
            # The wire's times are in the server's zone, never a request's: and looking the
            # active zone up per value (a context-local read) cost more than the rest of it.
            wire_field.timezone = timezone.get_default_timezone()
    return serializer


def _wire_value(wire_field: serializers.Field[Any, Any, Any, Any]) -> Callable[[Any], Any] | None:
    """How a field turns a present (not None) value into its wire form, as DRF's
    ``to_representation`` would and already JSON-ready; None when this field needs DRF."""
    if "format" in vars(wire_field) or len(wire_field.source_attrs) != 1:
        return None
    kind = type(wire_field)
    if kind in _ID_FIELDS and getattr(wire_field, "uuid_format", None) == "hex_verbose":
        return str
    if kind in (serializers.CharField, serializers.ChoiceField):
        return str
    if kind is serializers.BooleanField:
        return bool
    if kind in _DATE_FIELDS and api_settings.DATE_FORMAT == ISO_8601:
        return lambda value: value if isinstance(value, str) else value.isoformat()
    zone = getattr(wire_field, "timezone", None)
    if kind in _MOMENT_FIELDS and api_settings.DATETIME_FORMAT == ISO_8601 and zone is not None:

        def moment(value: Any) -> Any:
            if isinstance(value, str):
                return value
            value = value.astimezone(zone) if timezone.is_aware(value) else timezone.make_aware(value, zone)
            text: str = value.isoformat()
            return text[: -len("+00:00")] + "Z" if text.endswith("+00:00") else text

        return moment
    return None


def representation(serializer_class: type[serializers.Serializer[Any]]) -> Callable[[Any], dict[str, Any]]:
    """A record's wire form through ``serializer_class``, compiled once into a plan of plain
    attribute reads and conversions: DRF's ``to_representation`` per record (and a JSON
    round trip to normalise it) cost more than the rest of publishing a change. Falls back
    to DRF for any serializer with a field the plan does not know."""
    serializer = bound_serializer(serializer_class, partial=False)
    plan: list[tuple[str, str, Callable[[Any], Any]]] = []
    for name, wire_field in serializer.fields.items():
        if wire_field.write_only:
            continue
        convert = _wire_value(wire_field)
        if convert is None:

            def through_drf(record: Any) -> dict[str, Any]:
                drf = bound_serializer(serializer_class, partial=False)
                data: dict[str, Any] = json.loads(json.dumps(drf.to_representation(record)))
                return data

            return through_drf
        plan.append((name, wire_field.source_attrs[0], convert))

    def to_wire(record: Any) -> dict[str, Any]:
        data: dict[str, Any] = {}
        for name, attribute, convert in plan:
            value = getattr(record, attribute)
            data[name] = None if value is None else convert(value)
        return data

    return to_wire


# What a compiled check returns when it cannot vouch for a value: DRF then decides (and
# words the error).
_ASK_DRF: Any = object()
_ABSENT: Any = object()
# A str parsed from JSON holds a surrogate only unpaired (a pair becomes one character).
SURROGATE = re.compile("[\ud800-\udfff]")
_CHAR_VALIDATORS = (MaxLengthValidator, ProhibitNullCharactersValidator, ProhibitSurrogateCharactersValidator)


def _char_check(wire_field: serializers.CharField) -> Callable[[Any], Any]:
    trim, allow_blank, longest = wire_field.trim_whitespace, wire_field.allow_blank, wire_field.max_length

    def check(value: Any) -> Any:
        if type(value) is not str:
            return _ASK_DRF
        text = value.strip() if trim else value
        if not text:
            return "" if allow_blank else _ASK_DRF
        if (longest is not None and len(text) > longest) or "\x00" in text:
            return _ASK_DRF
        if not text.isascii() and SURROGATE.search(text):
            return _ASK_DRF
        return text

    return check


def _canonical_uuid_check(value: Any) -> Any:
    parsed = canonical_uuid(value)
    return _ASK_DRF if parsed is None else parsed


def _bool_check(value: Any) -> Any:
    return value if type(value) is bool else _ASK_DRF


def _date_check(value: Any) -> Any:
    if type(value) is not str or not value.isascii():  # DRF refuses another script's digits
        return _ASK_DRF
    try:
        parsed = parse_date(value)
    except ValueError:
        return _ASK_DRF
    return _ASK_DRF if parsed is None else parsed


def _moment_check(zone: Any) -> Callable[[Any], Any]:
    def check(value: Any) -> Any:
        if type(value) is not str or "\x00" in value or not value.isascii():
            return _ASK_DRF
        try:
            parsed = parse_datetime(value)
            if parsed is None or not timezone.is_aware(parsed):
                return _ASK_DRF  # DRF makes a naive time aware, or words the error
            if not calendar.within(parsed):
                return _ASK_DRF  # an offset field refuses it, a plain one keeps it
            return parsed.astimezone(zone)
        except (ValueError, OverflowError):
            return _ASK_DRF

    return check


def _choice_check(wire_field: serializers.ChoiceField) -> Callable[[Any], Any]:
    allowed, allow_blank = wire_field.choice_strings_to_values, wire_field.allow_blank

    def check(value: Any) -> Any:
        if type(value) is not str:
            return _ASK_DRF
        if value == "" and allow_blank:
            return ""
        return allowed.get(value, _ASK_DRF)

    return check


def _input_check(wire_field: serializers.Field[Any, Any, Any, Any]) -> Callable[[Any], Any] | None:
    """How a field turns a present, non-null wire value into its internal value, exactly as
    DRF's ``run_validation`` would for every value it accepts; None when this field needs DRF."""
    kind = type(wire_field)
    if kind is serializers.CharField:
        longest = getattr(wire_field, "max_length", None)
        if not all(
            isinstance(validator, _CHAR_VALIDATORS)
            and (not isinstance(validator, MaxLengthValidator) or validator.limit_value == longest)
            for validator in wire_field.validators
        ):
            return None
        return _char_check(wire_field)  # type: ignore[arg-type]
    if wire_field.validators:
        return None
    if kind is CanonicalUUIDField:  # a synced type takes no other id field (see register)
        return _canonical_uuid_check
    if kind is serializers.BooleanField:
        return _bool_check
    if kind is serializers.ChoiceField:
        return _choice_check(wire_field)  # type: ignore[arg-type]
    if kind in _DATE_FIELDS and getattr(wire_field, "input_formats", api_settings.DATE_INPUT_FORMATS) == [ISO_8601]:
        return _date_check
    zone = getattr(wire_field, "timezone", None)
    formats = getattr(wire_field, "input_formats", api_settings.DATETIME_INPUT_FORMATS)
    if kind in _MOMENT_FIELDS and formats == [ISO_8601] and zone is not None:
        return _moment_check(zone)
    return None


def _validates_plainly(serializer: serializers.Serializer[Any]) -> bool:
    """Whether validating with ``serializer`` is only its fields' own checks (no hooks of its own)."""
    kind = type(serializer)
    return (
        kind.run_validation is serializers.Serializer.run_validation
        and kind.validate is serializers.Serializer.validate
        and kind.to_internal_value in (serializers.Serializer.to_internal_value, StrictSerializer.to_internal_value)
        and not serializer.validators
        and not any(hasattr(serializer, f"validate_{name}") for name in serializer.fields)
    )


@functools.lru_cache(maxsize=256)
def validation(serializer_class: type[serializers.Serializer[Any]], *, partial: bool) -> Callable[[Any], Any]:
    """Incoming wire fields checked by a plan compiled from ``serializer_class``: returns the
    internal values DRF's ``run_validation`` would, or None when the plan cannot vouch for
    the input (an unknown key, a missing required field, a value of another type, anything
    DRF would refuse): then DRF validates it, and words the error. DRF per mutation cost
    more than the rest of checking it."""
    serializer = bound_serializer(serializer_class, partial=partial)
    plan: list[tuple[str, str, Callable[[Any], Any], bool, Any]] = []
    for name, wire_field in serializer.fields.items() if _validates_plainly(serializer) else ():
        if wire_field.read_only:
            continue
        check = _input_check(wire_field)
        if check is None or len(wire_field.source_attrs) != 1:
            return _through_drf
        if getattr(wire_field.default, "requires_context", False):
            return _through_drf
        if partial or wire_field.default is serializers.empty:
            when_absent = _ASK_DRF if wire_field.required and not partial else _ABSENT
        else:
            when_absent = wire_field.default
        plan.append((name, wire_field.source_attrs[0], check, wire_field.allow_null, when_absent))
    if not plan:
        return _through_drf
    known = frozenset(serializer.fields)

    def validate(data: Any) -> dict[str, Any] | None:
        if type(data) is not dict or not known.issuperset(data):
            return None
        internal: dict[str, Any] = {}
        for name, key, check, allow_null, when_absent in plan:
            value = data.get(name, _ABSENT)
            if value is _ABSENT:
                value = when_absent
                if value is _ASK_DRF:
                    return None
                if value is not _ABSENT:
                    internal[key] = value() if callable(value) else value
                continue
            if value is None:
                if not allow_null:
                    return None
                internal[key] = None
                continue
            value = check(value)
            if value is _ASK_DRF:
                return None
            internal[key] = value
        return internal

    return validate


def _through_drf(data: Any) -> None:
    return None


_registry: dict[str, SyncedType] = {}


def register(synced_type: SyncedType) -> None:
    """Register a type after every type its records refer to (a person before the encounters
    that name it): a client that sends its changes in no order of its own (a WatermelonDB
    push, table by table) has them applied in this one, parents first."""
    loose = _ids_in_any_spelling(synced_type.serializer)
    if loose:
        raise ValueError(
            f"record type {synced_type.name!r}: {loose[0]!r} takes an id in any spelling; make it a CanonicalUUIDField"
        )
    existing = _registry.get(synced_type.name)
    if existing is not None and existing.model is not synced_type.model:
        raise ValueError(f"record type {synced_type.name!r} is already registered")
    _registry[synced_type.name] = synced_type
    _health_names.cache_clear()


def _ids_in_any_spelling(serializer_class: type[serializers.Serializer[Any]]) -> list[str]:
    """The writable id fields that would read an id the client wrote otherwise than the
    server serves it (uppercase, braces, no dashes): the client would then get the record
    back naming another id than its own copy does."""
    return [
        name
        for name, wire_field in serializer_class().fields.items()
        if isinstance(wire_field, serializers.UUIDField)
        and not isinstance(wire_field, CanonicalUUIDField)
        and not wire_field.read_only
    ]


_declared_health_fields: set[str] = set()


def declare_health_fields(*names: str) -> None:
    """Name fields of feed-only records (written with ``services.record_change``, not
    registered here) that hold health information: sealed like a synced type's."""
    _declared_health_fields.update(names)
    _health_names.cache_clear()


def health_names() -> frozenset[str]:
    """Every wire field name a registered type declares as health information (or clinical
    text): stored copies seal these wherever they appear."""
    return _health_names()


@functools.cache
def _health_names() -> frozenset[str]:
    found: set[str] = set(_declared_health_fields)
    for synced_type in _registry.values():
        found |= synced_type.health_fields | synced_type.clinical_text_fields
    return frozenset(found)


def get(name: str) -> SyncedType | None:
    return _registry.get(name)


def all_types() -> list[SyncedType]:
    return sorted(_registry.values(), key=lambda synced_type: synced_type.name)


def in_registration_order() -> list[SyncedType]:
    """Every type, each after the types its records refer to (see ``register``)."""
    return list(_registry.values())


def by_watermelon_table(table: str) -> SyncedType | None:
    return next((t for t in _registry.values() if t.watermelon_table and t.watermelon_table == table), None)
