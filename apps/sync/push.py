"""Push: a device's batch of mutations, stored, applied one by one, and answered.

1. **Store.** Every mutation with a usable ``mutation_id`` is written to the ledger
   (``Mutation``). A mutation id the device already used finds its row: the stored result
   is returned and nothing changes (P2).
2. **Apply.** The device's stored, unapplied mutations are applied in order. Each one is
   all-or-nothing; the happy path applies a whole batch in one transaction with bulk
   writes, and any failure replays the batch one mutation per transaction, so a bad
   mutation is quarantined alone and never blocks the others.
3. **Answer** with a result per mutation: applied, duplicate, conflict, quarantined or
   rejected, and the server version.

The usual batch -- new mutations, in order, from a device with nothing stored and waiting --
is stored and applied in one transaction, its ledger rows written with their results
(``_store_and_apply``): each is kept exactly when what it changed is. Any other batch, and any
that fails there, is stored and committed first, then applied, so a failed push is answered
only once its mutations are in the ledger.

Content errors (invalid fields, a record the user may not touch, an unknown record type)
are stored results: the device stops retrying and a person can see them. Server faults
raise, answer 5xx, and the device retries: the ledger makes the retry safe.
"""

from __future__ import annotations

import hashlib
import json
import logging
import traceback
from collections import defaultdict
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any
from uuid import UUID

import orjson
from celery.exceptions import SoftTimeLimitExceeded
from django.db import DatabaseError, DataError, IntegrityError, InterfaceError, OperationalError, transaction
from django.db.models import F, QuerySet
from django.utils import timezone
from rest_framework import serializers

from apps.accounts.models import Device, User
from apps.accounts.selectors import (
    ProgramsJoined,
    TokenProblem,
    device_lockout_held,
    devices_not_locked_out,
    programs_joined,
)
from apps.audit.models import AccessChannel
from apps.audit.services import Accessor
from apps.common import bulk, calendar, jsontext
from apps.common.ids import CANONICAL_UUID, canonical_uuid
from apps.sync import audit as sync_audit
from apps.sync import conf, merge, registry, sealing
from apps.sync.models import (
    Conflict,
    ConflictKind,
    DismissCode,
    Mutation,
    MutationOperation,
    MutationStatus,
    RecordVersion,
    SyncedRecord,
)
from apps.sync.scopes import scopes_for_user, user_scope
from apps.sync.selectors import AWAITING_REVIEW, FeedPosition, heads_written
from apps.sync.services import (
    Head,
    PendingVersion,
    Publisher,
    WrittenSinceTransactionBegan,
    lock_device,
    lock_records,
)

# In characters, so every record its fields' own limits allow fits, in any script (a note of
# 50,000 characters of Cyrillic is 100 KB); the request body's 5 MiB bounds the bytes.
MAX_FIELDS_CHARACTERS = 64 * 1024
# The database went away or asked for a retry (a deadlock, a serialization failure), or a
# record was written meanwhile by a younger transaction: the request fails, nothing is lost,
# and the device's retry applies the batch.
_TRANSIENT = (OperationalError, InterfaceError, WrittenSinceTransactionBegan)
_OPERATIONS = frozenset(MutationOperation.values)
# The keys of a mutation the push reads; ``content`` (the client's own record state: part of
# the key, never applied) only from a client whose mutations are keyed by their content.
_MUTATION_KEYS = frozenset({"mutation_id", "type", "id", "op", "base_version", "fields", "observed_at", "content"})
_NUMBERED_MUTATION_KEYS = _MUTATION_KEYS - {"content"}
MUTATION_ID_MAX = (1 << 63) - 1
BASE_VERSION_MAX = (1 << 31) - 1  # the ledger's column: a version beyond it was never served
# The code of a change kept because the record it belongs to is in quarantine: it is applied
# when that record is created (children_waiting_on).
_PARENT_QUARANTINED = "parent_quarantined"

logger = logging.getLogger(__name__)


class PushStatus:
    """Per-mutation results on the wire."""

    APPLIED = "applied"
    DUPLICATE = "duplicate"
    CONFLICT = "conflict"
    QUARANTINED = "quarantined"
    REJECTED = "rejected"


@dataclass
class Envelope:
    """One mutation as the device sent it, checked for shape but not yet applied."""

    index: int
    raw: Any
    mutation_id: int | None
    payload_hash: str
    record_type: str = ""
    record_id: UUID | None = None
    operation: str = ""
    base_version: int | None = None
    fields: dict[str, Any] = field(default_factory=dict)
    observed_at: datetime | None = None
    observed_at_plausible: bool = True
    # A content problem found while parsing: the mutation is stored and quarantined.
    problem: dict[str, Any] | None = None
    # Why it cannot be stored at all (no usable mutation id).
    rejection: dict[str, Any] | None = None


def _error(code: str, detail: str, field_name: str | None = None) -> dict[str, Any]:
    return {"code": code, "detail": detail, "field": field_name}


_CANONICAL_OPTIONS = (
    orjson.OPT_SORT_KEYS
    | orjson.OPT_PASSTHROUGH_DATETIME
    | orjson.OPT_PASSTHROUGH_SUBCLASS
    | orjson.OPT_PASSTHROUGH_DATACLASS
)


def _not_json(value: Any) -> Any:
    # orjson's hook for a value it has no native text for: the standard library writes it.
    raise TypeError


def _canonical(raw: Any) -> bytes:
    """A mutation's JSON with its keys sorted, as ASCII: what its payload hash is made of.

    The text is the standard library's (``sort_keys``, compact separators, ``default=str``)
    byte for byte, as every release has hashed it: a replay across an upgrade must still be
    recognised. orjson writes the same text three times faster for a mutation without floats
    (the two write some differently: 1e-05 against 0.00001, Infinity against null) whose text
    is printable ASCII (the standard library escapes DEL and beyond). Anything else the
    standard library writes, as it does the values of an in-process caller that a request's
    JSON never holds (dates, subclasses of str and int, dataclasses).
    """
    if not _holds_float(raw):
        try:
            text = orjson.dumps(raw, default=_not_json, option=_CANONICAL_OPTIONS)
        except orjson.JSONEncodeError:
            pass
        else:
            if text.isascii() and b"\x7f" not in text:
                return text
    return json.dumps(raw, sort_keys=True, separators=(",", ":"), default=str).encode()


def _holds_float(value: Any) -> bool:
    kind = type(value)
    if kind is float:
        return True
    if kind is dict:
        value = value.values()
    elif kind is not list:
        return False
    for item in value:
        kind = type(item)
        if kind is float or ((kind is dict or kind is list) and _holds_float(item)):
            return True
    return False


def parse_envelope(
    raw: Any, index: int, *, keyed_by_content: bool = False, plausible: tuple[datetime, datetime] | None = None
) -> Envelope:
    canonical = _canonical(_keyed_content(raw) if keyed_by_content else raw)
    payload_hash = hashlib.sha256(canonical).hexdigest()
    # Both are escaped in the canonical text, so only a mutation that may hold them is walked.
    unstorable = None
    if b"\\u0000" in canonical or b"\\ud" in canonical:
        unstorable = _unstorable_text_at(raw, f"mutations.{index}")
    if unstorable is not None:
        # PostgreSQL's text and jsonb refuse NUL and unpaired surrogates: the ledger keeps a
        # copy with each replaced by U+FFFD, and the mutation is quarantined saying why.
        raw = _storable(raw)
    envelope = _read_envelope(
        raw,
        index,
        payload_hash=payload_hash,
        canonical_size=len(canonical),
        keyed_by_content=keyed_by_content,
        plausible=plausible,
    )
    if unstorable is not None and envelope.rejection is None and envelope.problem is None:
        envelope.problem = _error(
            "invalid_text", "Text may not hold NUL characters or unpaired surrogates.", unstorable
        )
    return envelope


def _keyed_content(raw: Any) -> Any:
    """What keys a mutation identified by its content: all of it but its ``observed_at``, which
    the WatermelonDB adapter reads from the content itself, so the key stays what releases
    that did not send it computed."""
    if isinstance(raw, dict) and "observed_at" in raw:
        return {key: value for key, value in raw.items() if key != "observed_at"}
    return raw


def _unstorable_text_at(value: Any, path: str) -> str | None:
    """Where the first text PostgreSQL cannot store is, or None. A key names its own place, as
    the ledger stores it (its characters replaced): the path is stored with the result."""
    if type(value) is str:
        unstorable = "\x00" in value or (not value.isascii() and registry.SURROGATE.search(value) is not None)
        return path if unstorable else None
    if type(value) is dict:
        for key, item in value.items():
            place = f"{path}.{_storable(key)}"
            at = _unstorable_text_at(key, place) or _unstorable_text_at(item, place)
            if at is not None:
                return at
    elif type(value) is list:
        for position, item in enumerate(value):
            at = _unstorable_text_at(item, f"{path}.{position}")
            if at is not None:
                return at
    return None


def _storable(value: Any) -> Any:
    if type(value) is str:
        return registry.SURROGATE.sub("\ufffd", value.replace("\x00", "\ufffd"))
    if type(value) is dict:
        return {_storable(key): _storable(item) for key, item in value.items()}
    if type(value) is list:
        return [_storable(item) for item in value]
    return value


def _read_envelope(
    raw: Any,
    index: int,
    *,
    payload_hash: str,
    canonical_size: int,
    keyed_by_content: bool,
    plausible: tuple[datetime, datetime] | None,
) -> Envelope:
    prefix = f"mutations.{index}"
    envelope = Envelope(index=index, raw=raw, mutation_id=None, payload_hash=payload_hash)
    if not isinstance(raw, dict):
        envelope.rejection = _error("invalid_mutation", "A mutation is a JSON object.", prefix)
        return envelope
    if not keyed_by_content:
        mutation_id = raw.get("mutation_id")
        if type(mutation_id) is not int or not 1 <= mutation_id <= MUTATION_ID_MAX:
            envelope.rejection = _error(
                "invalid_mutation_id", "mutation_id must be a positive integer.", f"{prefix}.mutation_id"
            )
            return envelope
        envelope.mutation_id = mutation_id
    record_type = raw.get("type")
    if not isinstance(record_type, str) or not record_type:
        envelope.problem = _error("required", "type is a record type name.", f"{prefix}.type")
        return envelope
    envelope.record_type = record_type[:64]
    operation = raw.get("op")
    operation = operation if type(operation) is str and operation in _OPERATIONS else None
    # Only the server's own spelling: it serves the record under that id, which a client that
    # sent another (uppercase, say) would take for a record it does not have.
    envelope.record_id = canonical_uuid(raw.get("id"))
    if envelope.record_id is None:
        envelope.operation = operation or ""  # the quarantine lists what the mutation was to do
        envelope.problem = _error("invalid_id", f"id must be {CANONICAL_UUID}.", f"{prefix}.id")
        return envelope
    if operation is None:
        envelope.problem = _error("invalid_op", "op must be create, update or delete.", f"{prefix}.op")
        return envelope
    envelope.operation = operation
    # Read after the type, id and op, so the result names the record (and its program reviews it).
    known = _MUTATION_KEYS if keyed_by_content else _NUMBERED_MUTATION_KEYS
    unknown = sorted(set(raw) - known)
    if unknown:
        envelope.problem = _error("unknown_field", f"Unknown key {unknown[0]!r}.", f"{prefix}.{unknown[0]}")
        return envelope
    base_version = raw.get("base_version")
    if base_version is not None and (type(base_version) is not int or not 0 <= base_version <= BASE_VERSION_MAX):
        envelope.problem = _error(
            "invalid_base_version",
            f"base_version is a whole number from 0 to {BASE_VERSION_MAX}.",
            f"{prefix}.base_version",
        )
        return envelope
    envelope.base_version = base_version
    # Null is no fields, as a null base_version is no base: a client's delete often sends it.
    fields = raw.get("fields")
    if fields is None:
        fields = {}
    elif not isinstance(fields, dict):
        envelope.problem = _error("invalid_fields", "fields must be an object (or null: none).", f"{prefix}.fields")
        return envelope
    # Measured as compact JSON; the whole mutation's canonical text, already made, is at least
    # as long (it escapes what is not ASCII), so only a mutation beyond the limit is measured.
    if canonical_size > MAX_FIELDS_CHARACTERS and _json_characters(fields) > MAX_FIELDS_CHARACTERS:
        envelope.problem = _error(
            "fields_too_large", f"fields are limited to {MAX_FIELDS_CHARACTERS} characters.", f"{prefix}.fields"
        )
        return envelope
    envelope.fields = fields
    observed_at = raw.get("observed_at")
    if observed_at is not None:
        parsed = calendar.offset_moment(observed_at)
        if parsed is None:
            envelope.problem = _error(
                "invalid_observed_at", "observed_at is an ISO 8601 time with an offset.", f"{prefix}.observed_at"
            )
            return envelope
        envelope.observed_at = parsed
        oldest, latest = plausible or plausible_times(timezone.now())
        envelope.observed_at_plausible = oldest <= parsed <= latest
    return envelope


def unreadable_as_sent(mutation: Mutation) -> bool:
    """Whether the mutation was kept for its shape, found while reading it (a wrong op, an
    unknown key, a malformed time, text the database cannot store): as it was sent it can
    never apply, whoever reviews it. Its error names a place in the batch; so does one kept
    for coming out of order, which is well formed and may apply after review."""
    error = mutation.result.get("error") or {}
    return str(error.get("field") or "").startswith("mutations.") and mutation.error_code != "mutation_out_of_order"


def _json_characters(value: Any) -> int:
    """The length of ``value`` as compact JSON, in characters, nothing escaped but what must be."""
    return len(json.dumps(value, ensure_ascii=False, separators=(",", ":"), default=str))


def plausible_times(now: datetime) -> tuple[datetime, datetime]:
    """The oldest and the latest plausible device time.

    A device's clock may be wrong; its time is kept as observed and flagged when unlikely:
    ahead of the server by more than the allowed skew, or older than the longest offline
    period a device is expected to survive. A batch's mutations share one window.
    """
    return now - timedelta(days=conf.MAX_OFFLINE_DAYS), now + timedelta(seconds=conf.CLOCK_SKEW_SECONDS)


@dataclass
class PushAnswer:
    """The answer to a push: a result per mutation sent, in their order; and the results of
    the device's earlier changes that this push released, kept until the record they belong
    to was created, which a create of the push did (``children_waiting_on``)."""

    results: list[dict[str, Any]]
    released: list[dict[str, Any]] = field(default_factory=list)


def push_mutations(
    *,
    device: Device,
    user: User,
    mutations: list[Any],
    client_version: str = "",
    keyed_by_content: bool = False,
    lockout: TokenProblem | None = None,
    problems: dict[int, dict[str, Any]] | None = None,
    accessor: Accessor | None = None,
    pulled_through: FeedPosition | None = None,
    bases: dict[int, int] | None = None,
) -> PushAnswer:
    """Store, apply and answer a batch of one device's mutations (see the module docstring).

    What the batch writes is audited as ``accessor``'s (the request's; the device's when none
    is given), in the transaction of its apply (P8). Replays' answers are the caller's to audit.

    With ``keyed_by_content`` (clients that do not number their changes), a mutation is
    identified by its content instead of a mutation id: sending the same change twice is
    a replay. A device under ``lockout`` (revoked, or its user deactivated) is handing over
    what it holds before it purges: each new mutation is stored and quarantined, never
    applied. ``problems`` are what a caller that made the mutations from a client's own form
    found wrong in them (a WatermelonDB delete flag that is not a boolean), by index, each
    an error naming its place in the mutation (``fields.deleted``): such a mutation is stored
    and quarantined, as one the server cannot read as it was sent. ``pulled_through``: where
    in the feed the device's last pull reached, for a client that does not take the versions
    its pushes make (``RecordVersion.held_by_writer``). ``bases``: by index, the base version
    of mutations that name none, where the caller knows the device held that version (a
    WatermelonDB app's delete of a record it had pulled: its create); the ledger keeps it as
    the mutation's base, so every later apply of it (one at a time, after review) takes it
    too, and the mutation's key, its content as sent, stays what it was.
    """
    plausible = plausible_times(timezone.now())
    envelopes = [
        parse_envelope(raw, index, keyed_by_content=keyed_by_content, plausible=plausible)
        for index, raw in enumerate(mutations)
    ]
    for index, problem in (problems or {}).items():
        envelope = envelopes[index]
        if envelope.rejection is None and envelope.problem is None:
            envelope.problem = {**problem, "field": f"mutations.{index}.{problem['field']}"}
    for index, base in (bases or {}).items():
        envelope = envelopes[index]
        if envelope.rejection is None and envelope.base_version is None:
            envelope.base_version = base
    results: dict[int, dict[str, Any]] = {}
    for envelope in envelopes:
        if envelope.rejection is not None:
            results[envelope.index] = _rejected(envelope, envelope.rejection)
    storable = [envelope for envelope in envelopes if envelope.rejection is None]
    sealed: dict[UUID | None, dict[Any, str]] = {}
    done_at_once = (
        _store_and_apply(
            device=device,
            user=user,
            envelopes=storable,
            client_version=client_version,
            results=results,
            sealed=sealed,
            accessor=accessor,
        )
        if storable and not keyed_by_content and lockout is None
        else None
    )
    final: dict[int, dict[str, Any]] = {}
    applied = Applied()
    if done_at_once is not None:
        rows_by_index, replayed, applied.results = done_at_once
    else:
        rows_by_index, replayed = _store(
            device=device,
            user=user,
            envelopes=storable,
            client_version=client_version,
            results=results,
            keyed_by_content=keyed_by_content,
            sealed=sealed,
            lockout=lockout,
        )
        final = {row.pk: row.result for row in rows_by_index.values() if row.status != MutationStatus.RECEIVED}
        if any(row.status == MutationStatus.RECEIVED for row in rows_by_index.values()):
            applied = apply_received(
                device=device,
                user=user,
                known={row.pk: row for row in rows_by_index.values()},
                sealed=sealed,
                accessor=accessor,
                pulled_through=pulled_through,
            )
    # Results of mutations applied by an earlier request (replays) come from the ledger. A
    # replay of a change this push released answers its new result (a WatermelonDB app sends
    # the rows of a refused record and of those under it until they are taken).
    stored_results = {**final, **applied.results}
    missing = {row.pk for row in rows_by_index.values()} - set(stored_results)
    if missing:
        stored_results.update(Mutation.objects.filter(pk__in=missing).values_list("pk", "result"))
    put_back_version_data([stored_results[pk] for pk in final.keys() | missing])
    if keyed_by_content and replayed:
        _send_back_replayed(
            user, [(row.record_id, stored_results[row.pk]) for index, row in rows_by_index.items() if index in replayed]
        )
    for index, row in rows_by_index.items():
        result = dict(stored_results[row.pk])
        if index in replayed:
            result["original_status"] = result.get("status")
            result["status"] = PushStatus.DUPLICATE
        results[index] = result
    return PushAnswer(
        results=[results[envelope.index] for envelope in envelopes],
        released=[applied.results[pk] for pk in applied.released],
    )


def _send_back_replayed(user: User, replays: list[tuple[UUID | None, dict[str, Any]]]) -> None:
    """After replays by content (WatermelonDB sends a record again when its push's answer was
    lost): the app marks the record synced with the values it sent again, which need not be
    the server's (a value the merge left as a colleague's, a conflict, a change made since,
    the app's pull in between having kept its own changed column). So the record as it stands
    goes back to the writer's devices through the feed, as after a refused change; not if the
    writer may no longer see it. Such replays are rare: only after a lost answer."""
    replayed = {
        record_id
        for record_id, result in replays
        if record_id is not None and result.get("status") in (PushStatus.APPLIED, PushStatus.CONFLICT)
    }
    if not replayed:
        return
    with transaction.atomic():
        # Read under the records' locks, as every writer of them does (_send_back_servers_copies).
        lock_records(list(replayed))
        publisher = Publisher()
        publisher.read_heads(replayed)
        scopes = set(scopes_for_user(user))
        for record_id in sorted(replayed):
            head = publisher.heads.get(record_id)
            if head is not None and not scopes.isdisjoint(head.scopes):
                publisher.reannounce(head, user_scope(user.pk))
        publisher.flush()


def put_back_version_data(stored: list[dict[str, Any]]) -> None:
    """Give results read from the ledger the data of the version they name (the ledger
    stores results without it; results stored before that still carry theirs)."""
    # Several results may name one version (an edit that changed nothing, a conflict).
    lacking: dict[tuple[UUID, int], list[dict[str, Any]]] = defaultdict(list)
    for result in stored:
        if (
            "data" not in result
            and result.get("status") in (PushStatus.APPLIED, PushStatus.CONFLICT)
            and result.get("id")
            and result.get("version") is not None
        ):
            lacking[(UUID(result["id"]), result["version"])].append(result)
    if not lacking:
        return
    versions = RecordVersion.objects.filter(
        record_id__in=bulk.any_of({record_id for record_id, _version in lacking}, "uuid"),
        version__in=bulk.any_of({version for _record_id, version in lacking}, "int"),
    ).values_list("record_id", "version", "data")
    for record_id, version, data in versions:
        for result in lacking.get((record_id, version), []):
            result["data"] = data


def _rejected(envelope: Envelope, error: dict[str, Any]) -> dict[str, Any]:
    raw = envelope.raw if isinstance(envelope.raw, dict) else {}
    return {
        "mutation_id": _echoed(raw.get("mutation_id")),
        "type": _echoed(raw.get("type")),
        "id": _echoed(raw.get("id")),
        "status": PushStatus.REJECTED,
        "version": None,
        "error": error,
    }


# Longer than any record type's name or any spelling of an id a client could mean.
_ECHO_MAX_CHARACTERS = 64


def _echoed(sent: Any) -> Any:
    """What a refused mutation sent, to name it back by: a value of the shape it could have
    had, else null. A 200,000-character id, or an object, is not sent back whole."""
    if sent is None or type(sent) is bool:
        return sent
    if type(sent) is int:
        return sent if -(2**63) <= sent < 2**63 else None
    return sent if type(sent) is str and len(sent) <= _ECHO_MAX_CHARACTERS else None


def _store(
    *,
    device: Device,
    user: User,
    envelopes: list[Envelope],
    client_version: str,
    results: dict[int, dict[str, Any]],
    keyed_by_content: bool,
    sealed: dict[UUID | None, dict[Any, str]] | None = None,
    lockout: TokenProblem | None = None,
) -> tuple[dict[int, LedgerRow], set[int]]:
    """Write the batch to the ledger and commit: returns each envelope's row, and which
    envelopes repeat a mutation stored by an earlier request."""
    existing: dict[Any, Mutation]
    with transaction.atomic():
        lock_device(device.pk)
        # As things stand now, not as they were when the request was authenticated: a device
        # revoked (or its user deactivated) while its push waited hands over, applies nothing.
        lockout = lockout or device_lockout_held(device_id=device.pk)
        locked_out = (
            _error(lockout.value, f"{lockout.message} The change is kept for a supervisor's review, not applied.")
            if lockout is not None
            else None
        )
        if keyed_by_content:
            existing = {
                row.payload_hash: row
                for row in Mutation.objects.filter(
                    device=device,
                    mutation_id=None,
                    payload_hash__in=bulk.any_of([envelope.payload_hash for envelope in envelopes], "text"),
                )
            }
            highest = 0
        else:
            position = _ledger_position(device.pk, [envelope.mutation_id for envelope in envelopes])
            highest = position.highest
            # Only a retried or replayed batch has rows already: they are read in full.
            existing = (
                {row.mutation_id: row for row in Mutation.objects.filter(pk__in=position.existing_ids)}
                if position.existing_ids
                else {}
            )
        batch = _ledger_rows(
            envelopes,
            existing=existing,
            highest=highest,
            keyed_by_content=keyed_by_content,
            locked_out=locked_out,
            device=device,
            user=user,
            client_version=client_version,
            results=results,
        )
        new_rows = list(batch.new_rows.values())
        inserted = _insert_ledger(new_rows, _sealed_payloads(new_rows, sealed))
        for pk, mutation_id, stored_hash in inserted:
            batch.new_rows[stored_hash if keyed_by_content else mutation_id].id = pk
        _file_for_review(new_rows)
        if locked_out is None:  # a locked-out device purges what it holds: nothing goes back to it
            _send_back_servers_copies(new_rows, user)
    return batch.rows_by_index, batch.replayed


def _store_and_apply(
    *,
    device: Device,
    user: User,
    envelopes: list[Envelope],
    client_version: str,
    results: dict[int, dict[str, Any]],
    sealed: dict[UUID | None, dict[Any, str]],
    accessor: Accessor | None,
) -> tuple[dict[int, LedgerRow], set[int], dict[int, dict[str, Any]]] | None:
    """The usual push, stored and applied in one transaction: the ledger's rows are written
    with their results, so each is kept exactly when what it changed is (P1, P2), and the
    batch costs one transaction instead of two and no second write of every ledger row.

    Only a batch of new mutations that all apply in order goes this way. Anything else --
    a replay, a device with stored mutations still waiting, one locked out, a mutation kept
    for review as it arrives, any failure -- returns None having kept nothing, and the push
    takes the long way: stored and committed first, then applied. So a push that fails is
    answered only once its mutations are in the ledger, as before; a server that dies in
    this transaction keeps nothing, and answers nothing, so the device sends them again.
    """
    try:
        with transaction.atomic():
            lock_device(device.pk)
            # Before the lockout's read, which locks the device's row: the transaction's first
            # write. (_apply_rows takes only the records'.)
            _lock_what_types_name(
                (envelope.record_type, registry.IncomingWrite(user.pk, envelope.operation, envelope.fields))
                for envelope in envelopes
            )
            if device_lockout_held(device_id=device.pk) is not None:
                return None
            position = _ledger_position(
                device.pk,
                [envelope.mutation_id for envelope in envelopes],
                new_ids=len(envelopes),
                created_ids=[
                    envelope.record_id
                    for envelope in envelopes
                    if envelope.operation == MutationOperation.CREATE and envelope.record_id is not None
                ],
            )
            if position.existing_ids or position.waiting:
                return None
            if position.creates_refused_before:
                return None  # a create sent again may release what waits on it: the long way does
            batch = _ledger_rows(
                envelopes,
                existing={},
                highest=position.highest,
                keyed_by_content=False,
                locked_out=None,
                device=device,
                user=user,
                client_version=client_version,
                results=results,
            )
            new_rows = list(batch.new_rows.values())
            if not new_rows or any(row.status != MutationStatus.RECEIVED for row in new_rows):
                return None
            for row, pk in zip(new_rows, position.new_ids, strict=False):
                row.id = pk
            rows: list[LedgerRow] = [*new_rows]
            writers = _Writers(device, user, accessor, {row.pk for row in rows})
            _apply_rows(
                rows,
                device=device,
                user=user,
                sealed=sealed,
                unstored_payloads=_sealed_payloads(new_rows, sealed),
                writers=writers,
            )
            _audit_writes(rows, writers)
    except SoftTimeLimitExceeded:
        raise
    except Exception:  # noqa: BLE001 - the long way meets the fault too, with the batch stored first
        return None
    return batch.rows_by_index, batch.replayed, {row.pk: row.result for row in rows}


@dataclass
class _LedgerBatch:
    """What a batch of envelopes comes to in the ledger."""

    rows_by_index: dict[int, LedgerRow]  # each envelope's row, stored before or new
    replayed: set[int]  # envelopes that repeat a mutation already stored, or one before them
    new_rows: dict[Any, NewLedgerRow]  # by mutation id (or content), in the batch's order


def _ledger_rows(
    envelopes: list[Envelope],
    *,
    existing: dict[Any, Mutation],
    highest: int,
    keyed_by_content: bool,
    locked_out: dict[str, Any] | None,
    device: Device,
    user: User,
    client_version: str,
    results: dict[int, dict[str, Any]],
) -> _LedgerBatch:
    """Each envelope's ledger row: the ``existing`` one it repeats, or a new one (kept for
    review as it arrives when it cannot apply: sent out of order, unreadable as sent, or
    from a device ``locked_out``). Envelopes that reuse a mutation id for other content get
    their rejection in ``results`` and no row."""
    batch = _LedgerBatch(rows_by_index={}, replayed=set(), new_rows={})
    new_rows = batch.new_rows
    for envelope in envelopes:
        key = envelope.payload_hash if keyed_by_content else envelope.mutation_id
        stored = existing.get(key)
        if stored is not None:
            if stored.payload_hash != envelope.payload_hash:
                results[envelope.index] = _rejected(
                    envelope,
                    _error(
                        "mutation_id_reused",
                        "This mutation_id was already used for a different mutation; that one stands.",
                        f"mutations.{envelope.index}.mutation_id",
                    ),
                )
            else:
                batch.rows_by_index[envelope.index] = stored
                if stored.status != MutationStatus.RECEIVED:
                    batch.replayed.add(envelope.index)
            continue
        if key in new_rows:  # the same mutation twice in one batch
            if new_rows[key].payload_hash != envelope.payload_hash:
                results[envelope.index] = _rejected(
                    envelope,
                    _error(
                        "mutation_id_reused",
                        "This mutation_id appears twice in the batch with different content.",
                        f"mutations.{envelope.index}.mutation_id",
                    ),
                )
            else:
                batch.rows_by_index[envelope.index] = new_rows[key]
                batch.replayed.add(envelope.index)
            continue
        problem = envelope.problem
        if not keyed_by_content:
            assert envelope.mutation_id is not None
            if problem is None and envelope.mutation_id <= highest:
                problem = _error(
                    "mutation_out_of_order",
                    f"mutation_id {envelope.mutation_id} is not above {highest}, the highest this device sent; "
                    "mutations must be sent in the order they were made. Kept for review, not applied.",
                    f"mutations.{envelope.index}.mutation_id",
                )
            # Every stored mutation counts, whatever it is kept for, as the ledger's highest
            # does for a later batch: the same mutations split otherwise answer the same.
            highest = max(highest, envelope.mutation_id)
        problem = problem or locked_out
        row = new_ledger_row(envelope, device_id=device.pk, user_id=user.pk, client_version=client_version)
        if problem is not None:
            row.status = MutationStatus.QUARANTINED
            row.error_code = problem["code"]
            row.result = _result(row, PushStatus.QUARANTINED, error=problem)
        new_rows[key] = row
        batch.rows_by_index[envelope.index] = row
    return batch


def _sealed_payloads(rows: list[NewLedgerRow], sealed: dict[UUID | None, dict[Any, str]] | None) -> list[str]:
    """The ledger's copies of the rows' payloads, their health fields sealed. Each record's
    sealings are remembered in ``sealed``, so the version the apply writes reuses the sealing
    of an unchanged value instead of sealing it again."""
    payloads = []
    for row in rows:
        memo = sealed.setdefault(row.record_id, {}) if sealed is not None and row.record_id is not None else None
        payloads.append(jsontext.dumps(sealing.seal_tree(row.payload, memo)))
    return payloads


@dataclass(slots=True)
class NewLedgerRow:
    """A ledger row this request stores, as plain values while its batch applies.

    Its fields are ``Mutation``'s columns, in order (a test holds them together), so the
    apply reads it like a row loaded from the ledger: a model instance per mutation cost a
    push several microseconds a mutation to build, and nothing here needs the model's
    machinery.
    """

    id: int  # 0 until the insert gives it its id
    device_id: UUID
    user_id: UUID
    mutation_id: int | None
    payload_hash: str
    record_type: str
    record_id: UUID | None
    operation: str
    base_version: int | None
    payload: Any
    observed_at: datetime | None
    observed_at_plausible: bool
    client_version: str
    received_at: datetime | None  # when the batch is inserted
    status: str
    result: dict[str, Any]
    error_code: str
    applied_at: datetime | None
    program_id: UUID | None  # set in the ledger, for a quarantined mutation (_file_for_review)
    dismissed_at: datetime | None  # set when it is set aside (apps.sync.review, _set_aside_superseded)
    dismissed_by_id: UUID | None
    dismiss_reason: str
    dismiss_code: str
    superseded_by_id: int | None

    @property
    def pk(self) -> int:
        return self.id


# A ledger row as the push handles it: stored by this request, or read from the ledger.
LedgerRow = Mutation | NewLedgerRow


def new_ledger_row(envelope: Envelope, *, device_id: UUID, user_id: UUID, client_version: str) -> NewLedgerRow:
    """The ledger row of a mutation about to be stored, received and not applied yet."""
    return NewLedgerRow(
        0,
        device_id,
        user_id,
        envelope.mutation_id,
        envelope.payload_hash,
        envelope.record_type,
        envelope.record_id,
        envelope.operation,
        envelope.base_version,
        envelope.raw,
        envelope.observed_at,
        envelope.observed_at_plausible,
        client_version[:100],
        None,
        MutationStatus.RECEIVED,
        {},
        "",
        None,
        None,
        None,
        None,
        "",
        "",
        None,
    )


@dataclass(frozen=True, slots=True)
class _LedgerPosition:
    highest: int  # the highest mutation id the device has sent, 0 before its first
    existing_ids: list[int]  # ledger rows of the batch's mutation ids that exist already
    waiting: bool  # whether the device has stored mutations not applied yet
    new_ids: list[int]  # ledger ids taken for the batch's new rows, ascending
    # Whether the device has a create in quarantine of a record the batch creates: that
    # create of the batch may release changes kept under it (children_waiting_on).
    creates_refused_before: bool


def _ledger_position(
    device_id: UUID, mutation_ids: list[int | None], *, new_ids: int = 0, created_ids: Sequence[UUID] = ()
) -> _LedgerPosition:
    """Where the device stands in the ledger, and ``new_ids`` ids for its new rows: one
    statement, run at every push. An id taken and not used leaves a gap, which is harmless."""
    # The statuses and the operation are written in the text, not bound: a generic plan of
    # the prepared statement could not use the partial indexes of received and of quarantined
    # rows (see _received_ids). The creates are found by record, as the second one is: only
    # the batch's own ids are looked at, never the device's whole quarantine.
    with bulk.server_cursor() as cursor:
        cursor.execute(
            "SELECT coalesce((SELECT max(mutation_id) FROM sync_mutation WHERE device_id = %b), 0),"
            " array(SELECT id FROM sync_mutation WHERE device_id = %b AND mutation_id = ANY(%b::bigint[])),"
            " EXISTS (SELECT FROM sync_mutation WHERE device_id = %b AND status = 'received'),"
            " array(SELECT nextval(pg_get_serial_sequence('sync_mutation', 'id')) FROM generate_series(1, %b)),"
            " EXISTS (SELECT FROM sync_mutation WHERE record_id = ANY(%b::uuid[]) AND status = 'quarantined'"
            " AND operation = 'create' AND device_id = %b)",
            [device_id, device_id, mutation_ids, device_id, new_ids, list(created_ids), device_id],
        )
        row = cursor.fetchone()
    assert row is not None  # scalar subqueries: always one row
    return _LedgerPosition(
        highest=row[0], existing_ids=row[1], waiting=row[2], new_ids=sorted(row[3]), creates_refused_before=row[4]
    )


def _ledger_insert(columns: dict[str, str]) -> str:
    """The statement inserting ledger rows given as one array per column (name: type)."""
    names = ", ".join(columns)
    arrays = ", ".join(f"%b::{type_name}[]" for type_name in columns.values())
    return (
        f"INSERT INTO sync_mutation (received_at, {names}) SELECT %b::timestamptz, m.*"  # noqa: S608 - constant
        f" FROM unnest({arrays}) AS m({names}) RETURNING id, mutation_id, payload_hash"
    )


_LEDGER_COLUMNS = {
    "device_id": "uuid",
    "user_id": "uuid",
    "mutation_id": "bigint",
    "payload_hash": "text",
    "record_type": "text",
    "record_id": "uuid",
    "operation": "text",
    "base_version": "int",
    "payload": "jsonb",
    "observed_at": "timestamptz",
    "observed_at_plausible": "bool",
    "client_version": "text",
    "status": "text",
    "result": "jsonb",
    "error_code": "text",
}
_INSERT_RECEIVED = _ledger_insert(_LEDGER_COLUMNS)
_INSERT_APPLIED = _ledger_insert({**_LEDGER_COLUMNS, "id": "bigint", "applied_at": "timestamptz"})


def _insert_ledger(
    rows: Sequence[LedgerRow], stored_payloads: list[str], *, with_results: bool = False
) -> list[tuple[int, int | None, str]]:
    """One statement for the batch's ledger rows; returns (id, mutation_id, payload_hash) of
    each. ``with_results``: the rows are applied already, and hold their ids, results and
    times of apply (_store_and_apply)."""
    if not rows:
        return []
    received_at = timezone.now()
    for row in rows:
        row.received_at = received_at
    arrays: list[list[Any]] = [
        [row.device_id for row in rows],
        [row.user_id for row in rows],
        [row.mutation_id for row in rows],
        [row.payload_hash for row in rows],
        [row.record_type for row in rows],
        [row.record_id for row in rows],
        [row.operation for row in rows],
        [row.base_version for row in rows],
        stored_payloads,
        [row.observed_at for row in rows],
        [row.observed_at_plausible for row in rows],
        [row.client_version for row in rows],
        [str(row.status) for row in rows],
        [_stored_result(row.result) for row in rows],
        [row.error_code for row in rows],
    ]
    if with_results:
        arrays += [[row.pk for row in rows], [row.applied_at for row in rows]]
    with bulk.server_cursor() as cursor:
        cursor.execute(_INSERT_APPLIED if with_results else _INSERT_RECEIVED, [received_at, *arrays])
        return cursor.fetchall()


def _stored_result(result: dict[str, Any]) -> str:
    """A result as the ledger keeps it: sealed, and without the data of the version it
    names, which the ledger does not repeat (put_back_version_data reads it back)."""
    return jsontext.dumps(sealing.seal_tree({key: value for key, value in result.items() if key != "data"}))


def _file_for_review(rows: Iterable[LedgerRow]) -> None:
    """Give the quarantined mutations among these rows the program whose supervisors review
    them (the writer may be in several programs, or have left this one): the program of the
    record each changes, where the server has it; for a create of a new record, the program
    of the unit or parent record it names. Only a program the writer works for or has left:
    what someone never in a program sends under its ids (a tablet set up wrongly) is their
    own program's to review, not that program's to read. One naming nothing the writer was
    ever part of goes to the program its writer works for, if only one (working for none,
    the one they left, if only one); otherwise to none (``selectors._reviewed_by``). A few
    statements however many rows (a locked-out tablet hands over its whole outbox at once)."""
    # A create under an id spelt otherwise than the server writes ids has no record id, and is
    # filed by the parent or unit it names all the same.
    quarantined = [row for row in rows if row.status == MutationStatus.QUARANTINED]
    if not quarantined:
        return
    named = _programs_named_by_creates(quarantined)
    # A create by what it names: under an id another program's record holds, the writer's new
    # record is still the writer's program's to review, not that program's.
    changed = {row.record_id for row in quarantined if row.pk not in named and row.record_id is not None}
    of_record = dict(
        SyncedRecord.objects.filter(record_id__in=bulk.any_of(changed, "uuid")).values_list("record_id", "program_id")
        if changed
        else []
    )
    joined = programs_joined(user_ids={row.user_id for row in quarantined})
    filed: dict[int, tuple[UUID, bool]] = {}  # by ledger row: the program, and whether it overrides one filed before
    for row in quarantined:
        writer = joined.get(row.user_id, ProgramsJoined())
        if row.pk in named:
            program_id, overrides = named[row.pk], True
        elif row.record_id is not None and row.record_id in of_record:
            program_id, overrides = of_record[row.record_id], False
        else:
            program_id, overrides = None, False
        if program_id not in writer.ever:
            # Theirs to review who answer for the writer: their one program (or, working for
            # none now, the one they left). Never one named that they were not part of.
            answering = writer.works_for or writer.left
            if len(answering) != 1:
                continue
            [program_id], overrides = answering, False
        filed[row.pk] = (program_id, overrides)
    if not filed:
        return
    with bulk.server_cursor() as cursor:
        # A mutation filed before (put back to apply, refused again) keeps its program, unless
        # it names the program it belongs to.
        cursor.execute(
            "UPDATE sync_mutation AS m"
            " SET program_id = CASE WHEN n.overrides THEN n.program_id ELSE coalesce(m.program_id, n.program_id) END"
            " FROM unnest(%b::bigint[], %b::uuid[], %b::boolean[]) AS n(id, program_id, overrides)"
            " WHERE m.id = n.id",
            [list(filed), [program_id for program_id, _ in filed.values()], [over for _, over in filed.values()]],
        )


def _programs_named_by_creates(rows: list[LedgerRow]) -> dict[int, UUID]:
    """By ledger row: the program of the unit or parent record each create names (one read
    per kind of parent), for the creates that name one the server has, or one the server has
    only as its writer's quarantined create (an encounter written offline with its notes, all
    kept for review): that create's program, from this batch or the ledger."""
    named: dict[tuple[type[Any], str], dict[int, UUID]] = defaultdict(dict)
    for row in rows:
        synced_type = registry.get(row.record_type)
        if row.operation != MutationOperation.CREATE or synced_type is None or synced_type.program_from is None:
            continue
        model, field_name = synced_type.program_from
        named_id = _id_named_by(row, field_name)
        if named_id is not None:
            named[(model, synced_type.program_lookup)][row.pk] = named_id
    programs: dict[int, UUID] = {}
    for (model, lookup), by_row in named.items():
        found = dict(
            model._default_manager.filter(pk__in=bulk.any_of(set(by_row.values()), "uuid")).values_list("pk", lookup)
        )
        programs.update((pk, found[named_id]) for pk, named_id in by_row.items() if found.get(named_id) is not None)
    parent_of = {pk: named_id for by_row in named.values() for pk, named_id in by_row.items() if pk not in programs}
    if parent_of:
        programs.update(_programs_of_quarantined_parents(rows, parent_of, programs))
    return programs


def _programs_of_quarantined_parents(
    rows: list[LedgerRow], parent_of: dict[int, UUID], programs: dict[int, UUID]
) -> dict[int, UUID]:
    """By ledger row: for creates whose parent the server does not have, the program its
    writer's quarantined create of that parent was filed under; in the batch's order, so a
    chain written offline (an encounter, its referral, the referral's outcome) follows."""
    user_ids = {row.user_id for row in rows}
    filed: dict[tuple[UUID, UUID], UUID] = {
        (user_id, record_id): program_id
        for user_id, record_id, program_id in Mutation.objects.filter(
            user_id__in=user_ids,
            record_id__in=bulk.any_of(set(parent_of.values()), "uuid"),
            operation=MutationOperation.CREATE,
            status=MutationStatus.QUARANTINED,
            program__isnull=False,
        )
        .order_by("-id")
        .values_list("user_id", "record_id", "program_id")
        if record_id is not None and program_id is not None
    }
    found: dict[int, UUID] = {}
    for row in sorted(rows, key=lambda row: row.pk):
        named_id = parent_of.get(row.pk)
        if named_id is not None and (program_id := filed.get((row.user_id, named_id))) is not None:
            found[row.pk] = program_id
        program_id = found.get(row.pk) or programs.get(row.pk)
        if row.operation == MutationOperation.CREATE and row.record_id is not None and program_id is not None:
            filed.setdefault((row.user_id, row.record_id), program_id)
    return found


def _id_named_by(row: LedgerRow, field_name: str) -> UUID | None:
    """The id a wire field of this mutation names, if it holds one (it may hold anything)."""
    fields = row.payload.get("fields") if isinstance(row.payload, dict) else None
    named = fields.get(field_name) if isinstance(fields, dict) else None
    try:
        return UUID(named) if isinstance(named, str) else None
    except ValueError:
        return None


def _result(
    row: LedgerRow,
    status: str,
    *,
    version: int | None = None,
    data: dict[str, Any] | None = None,
    error: dict[str, Any] | None = None,
    conflicts: list[dict[str, Any]] | None = None,
    repeated: bool = False,
) -> dict[str, Any]:
    result: dict[str, Any] = {
        "mutation_id": row.mutation_id,
        "type": row.record_type or None,
        "id": str(row.record_id) if row.record_id else None,
        "status": status,
        "version": version,
    }
    if data is not None:
        result["data"] = data
    if error is not None:
        result["error"] = error
    if conflicts:
        result["conflicts"] = conflicts
    if repeated:  # a create of the record as it stands (SyncedType.create_repeats): wrote nothing
        result["repeated"] = True
    if not row.observed_at_plausible:
        result["warnings"] = [
            _error("observed_at_implausible", "The device clock looks wrong; the time is kept as observed.")
        ]
    return result


class _FallBack(Exception):
    """Something in the batch failed: undo it and go one mutation per transaction."""


@dataclass
class Applied:
    """What ``apply_received`` applied: each mutation's result, by ledger row, and which of
    them were released by a create (children_waiting_on) rather than received."""

    results: dict[int, dict[str, Any]] = field(default_factory=dict)
    released: list[int] = field(default_factory=list)


def apply_received(
    *,
    device: Device,
    user: User,
    known: dict[int, LedgerRow] | None = None,
    sealed: dict[UUID | None, dict[Any, str]] | None = None,
    reviewed: frozenset[int] = frozenset(),
    reviewed_by: Accessor | None = None,
    accessor: Accessor | None = None,
    pulled_through: FeedPosition | None = None,
    types_locked: bool = False,
) -> Applied:
    """Apply every stored, unapplied mutation of the device, in the order it made them.

    ``known`` are ledger rows the caller has in memory (the batch it just stored), so they
    are not read again; what they write is audited as ``accessor``'s. ``reviewed`` are ledger
    rows applied again after review: their device took them for refused, so what they write
    goes back to it through the feed, and the review audits them as its reviewer's,
    ``reviewed_by`` (so does a domain service that audits what it writes with them).
    ``pulled_through``: where the device's last pull reached in the feed (see push_mutations);
    the slow path, one mutation at a time, goes without it.
    ``types_locked``: the caller's transaction, which this one is part of, took the locks
    these mutations' types name before its first write (lock_before_first_write, as a
    review does), so they are not taken again.
    Each create that applies releases the device's changes kept until its record was created
    (children_waiting_on): they apply again right after it, in the same transaction, as their
    writer's changes (audited so), and go back to the device, which holds them as refused.

    Returns the result of every mutation applied here, those released included.
    """
    known = known or {}
    writers = _Writers(device, user, accessor, set(known), reviewed, reviewed_by)
    try:
        with transaction.atomic():
            lock_device(device.pk)
            ids = _received_ids(device.pk)
            unknown = [pk for pk in ids if pk not in known or known[pk].status != MutationStatus.RECEIVED]
            fetched = Mutation.objects.in_bulk(unknown) if unknown else {}
            rows: list[LedgerRow] = [fetched[pk] if pk in fetched else known[pk] for pk in ids]
            released: list[Mutation] = []
            if rows:
                kept_creates = creates_kept_of(rows)
                waiting = children_waiting_on(rows, reviewed=reviewed, kept_creates=kept_creates)
                if not types_locked:  # before the transaction's first write; _apply_rows locks the records after
                    _lock_what_types_name(_writes_as_sent([*rows, *waiting]))
                released = _apply_rows(
                    rows,
                    device=device,
                    user=user,
                    sealed=sealed,
                    writers=writers,
                    pulled_through=pulled_through,
                    waiting=waiting,
                    kept_creates=kept_creates,
                )
                rows += released
                _audit_writes(rows, writers)
        return Applied({row.pk: row.result for row in rows}, [row.pk for row in released])
    except _FallBack:
        # Undone with the batch's transaction: what it released is released no more.
        writers.released.clear()
    # Slow path: each mutation alone, so one failure is quarantined and the rest apply.
    applied_alone = Applied()
    sent_with: set[tuple[UUID, UUID | None]] = set()
    while True:
        with transaction.atomic():
            lock_device(device.pk)
            row = Mutation.objects.filter(device=device, status=MutationStatus.RECEIVED).order_by("id").first()
            if row is None:
                return applied_alone
            # The device's other changes of a record, still to apply or applied already in
            # this run, keep a create of it from being released (children_waiting_on). Only a
            # create releases anything, so only then are they read.
            deleted_later: set[UUID | None] = set()
            if row.operation == MutationOperation.CREATE:
                still_to_apply = Mutation.objects.filter(device=device, status=MutationStatus.RECEIVED).values_list(
                    "device_id", "record_id", "operation"
                )
                for device_id, record_id, operation in still_to_apply:
                    sent_with.add((device_id, record_id))
                    if operation == MutationOperation.DELETE:
                        deleted_later.add(record_id)
            kept_creates = creates_kept_of([row])
            waiting = children_waiting_on([row], reviewed=reviewed, sent_with=sent_with, kept_creates=kept_creates)
            # The records of the changes its create may release are locked before this
            # transaction's first write, as every writer's (WrittenSinceTransactionBegan).
            lock_before_first_write([row, *waiting], types_locked=types_locked)
            applied: list[LedgerRow] = [
                *_apply_alone(
                    row,
                    device=device,
                    user=user,
                    writers=writers,
                    waiting=waiting,
                    # A record the device deletes in a later change is not made as sent: what
                    # it kept of it stays for review, as on the batch's way (_made_its_record_as_sent).
                    kept_creates=[kept for kept in kept_creates if kept.record_id not in deleted_later],
                )
            ]
            _audit_writes(applied, writers)
            applied_alone.results.update((applied_row.pk, applied_row.result) for applied_row in applied)
            applied_alone.released += [applied_row.pk for applied_row in applied[1:]]


def _apply_alone(
    row: Mutation,
    *,
    device: Device,
    user: User,
    writers: _Writers,
    waiting: Sequence[Mutation],
    kept_creates: Sequence[Mutation] = (),
) -> list[Mutation]:
    """Apply one mutation alone (_apply_in_savepoint), its create setting aside those of
    ``kept_creates`` it supersedes (_set_aside_superseded). A create that applies releases
    the changes ``waiting`` on its record (_release): each is then applied alone the same
    way, right after it and before the next, as on the batch's way (_apply_rows). Returns
    the row and those released, in the order applied."""
    waiting_on = _by_parent_waited_on(waiting)
    applied: list[Mutation] = []
    pending = [row]
    while pending:
        current = pending.pop()
        _apply_in_savepoint(
            current,
            device=device,
            user=user,
            writers=writers,
            kept_creates=kept_creates if current is row else (),
            released=current is not row,
        )
        applied.append(current)
        pending += reversed(_release(current, waiting_on, writers))  # next, in their order
    return applied


def _apply_in_savepoint(
    row: Mutation,
    *,
    device: Device,
    user: User,
    writers: _Writers,
    kept_creates: Sequence[Mutation],
    released: bool,
) -> None:
    """Apply one mutation in a savepoint of the caller's transaction: a refusal, or a fault of
    its content, keeps it in quarantine alone, saying why. ``released``: put back to apply by
    a create just applied (_release)."""
    try:
        with transaction.atomic():
            _apply_rows(
                [row],
                device=device,
                user=user,
                raise_refusals=True,
                writers=writers,
                kept_creates=kept_creates,
                released=frozenset({row.pk}) if released else frozenset(),
            )
    except registry.Refused as refusal:
        _quarantine_alone(row, _refusal_error(row, refusal), user=user)
    except (IntegrityError, DataError) as fault:
        # The database refused the content (a reference to a missing record, a value out of
        # range): keep it for a person rather than retrying forever.
        _quarantine_alone(row, _error("rejected_by_database", type(fault).__name__), user=user)
    except (*_TRANSIENT, SoftTimeLimitExceeded):
        # Not this content's fault (the database, or the stranded sweep's soft time limit):
        # undone, the mutation stays received for a later apply.
        raise
    except Exception as fault:  # noqa: BLE001 - kept and logged, never dropped
        # A fault of the server's own code on this content: retrying would fail the same way
        # and hold back every later mutation of the device. It is kept for a person, and the
        # log names the fault and where, never the content.
        logger.error("Mutation %s could not be applied: %s", row.pk, _fault_and_place(fault))
        _quarantine_alone(
            row,
            _error("apply_failed", "The server could not apply this mutation; it is kept for review."),
            user=user,
        )


def _release(
    row: LedgerRow,
    waiting_on: dict[UUID | None, list[Mutation]],
    writers: _Writers,
    heads: dict[UUID, Head] | None = None,
) -> list[Mutation]:
    """Once this row has applied: if it created a record changes wait on (``waiting_on``:
    children_waiting_on, by that record), those changes, each put back to apply as released
    (``writers.released``), once, should the record be created again. ``heads`` are the
    caller's, holding the record's head since the row applied; without them it is read, and
    only when something waits on the record."""
    if row.record_id is None or not waiting_on.get(row.record_id):
        return []
    if not _created_its_record(row, _heads_now(row.record_id) if heads is None else heads):
        return []
    children = [child for child in waiting_on.pop(row.record_id) if child.pk not in writers.released]
    for child in children:
        _put_row_back_to_apply(child)
        writers.released.add(child.pk)
    return children


def _heads_now(record_id: UUID | None) -> dict[UUID, Head]:
    """The record's head as this transaction sees it (its own writes included), if it has one."""
    publisher = Publisher()
    if record_id is not None:
        publisher.read_heads([record_id])
    return publisher.heads


def _audit_writes(rows: list[LedgerRow], writers: _Writers) -> None:
    """Audit what these rows wrote, in the transaction of their apply (P8): a write is never
    kept without who made it, each as ``writers`` name it. Rows a supervisor applied again
    after review are the review's to audit, as its reviewer's (with the rest of the review)."""
    by_accessor: dict[Accessor, list[LedgerRow]] = defaultdict(list)
    for row in rows:
        if row.pk not in writers.reviewed:
            by_accessor[writers.of(row)].append(row)
    for writer, written in by_accessor.items():
        sync_audit.record_ledger_writes(accessor=writer, mutations=written)


class _Writers:
    """Who wrote what each ledger row applies, for the audit trail (P8): the request's own
    rows are its ``accessor``'s; rows stored by an earlier request of the device that died
    before applying them, which no one else audits (a retry of that request only gets
    duplicates), the device's, as the push that carried them would have said; rows a
    supervisor applied again after review, the reviewer's (``reviewed_by``). Rows a create
    released (children_waiting_on) are their writer's: the request's accessor when its own
    device wrote them (a push sending the parent again), else their device's."""

    def __init__(
        self,
        device: Device,
        user: User,
        accessor: Accessor | None,
        requested: set[int],
        reviewed: frozenset[int] = frozenset(),
        reviewed_by: Accessor | None = None,
    ) -> None:
        self.device_accessor = Accessor(user=user, device_id=device.pk, channel=AccessChannel.SYNC)
        self.accessor, self.requested = accessor, requested
        self.reviewed, self.reviewed_by = reviewed, reviewed_by
        # Rows a create released in this apply, over all its transactions that stand: each is
        # released once (_release), and written as its writer's (of). What each transaction
        # released itself is its _BatchState.released_here.
        self.released: set[int] = set()

    def of(self, row: LedgerRow) -> Accessor:
        if row.pk in self.reviewed and self.reviewed_by is not None:
            return self.reviewed_by
        if self.accessor is not None and (
            row.pk in self.requested or (row.pk in self.released and row.device_id == self.accessor.device_id)
        ):
            return self.accessor
        return self.device_accessor


def _fault_and_place(fault: Exception) -> str:
    """A fault's kind and the line that raised it, for the log: never its message, which may
    quote the content it failed on."""
    where = traceback.extract_tb(fault.__traceback__)[-1]
    return f"{type(fault).__name__} at {where.filename}:{where.lineno}"


def _refusal_error(row: Mutation, refusal: registry.Refused) -> dict[str, Any]:
    field_name = refusal.field and f"fields.{refusal.field}"
    if refusal.code == "parent_not_found" and refusal.field:
        parent_id = _id_named_by(row, refusal.field)
        create = _quarantined_create(row.user_id, parent_id) if parent_id is not None else None
        if create is not None:
            # Released only by its own device's create of that record, and only a create
            # (children_waiting_on): anything else waits for review, as it is told.
            releasable = row.operation == MutationOperation.CREATE and create.device_id == row.device_id
            then = (
                "and applies once this device's create of that record applies"
                " (unless this record has other changes kept too)"
                if releasable
                else "for review together"
            )
            detail = _waits_for(create, "The create of the record it belongs to", then)
            return _error(_PARENT_QUARANTINED, detail, field_name)
    return _error(refusal.code, refusal.detail, field_name)


def _received_ids(device_id: UUID) -> list[int]:
    """The device's stored, unapplied mutations, in the order it made them."""
    # The status is written in the text, not bound: the statement is prepared, and a generic
    # plan cannot use the index of received rows for a bound status, so it scanned the ledger.
    with bulk.server_cursor() as cursor:
        cursor.execute(
            "SELECT id FROM sync_mutation WHERE device_id = %b AND status = 'received' ORDER BY id", [device_id]
        )
        return [pk for (pk,) in cursor.fetchall()]


def _quarantine_alone(row: Mutation, error: dict[str, Any], *, user: User) -> None:
    row.status = MutationStatus.QUARANTINED
    row.error_code = error["code"]
    row.result = _result(row, PushStatus.QUARANTINED, error=error)
    row.applied_at = timezone.now()
    row.save(update_fields=["status", "error_code", "result", "applied_at"])
    _file_for_review([row])
    _send_back_servers_copies([row], user)


def _send_back_servers_copies(rows: Iterable[LedgerRow], user: User) -> None:
    """``_send_back_servers_copy`` for refused changes outside a batch's apply."""
    refused = [row for row in rows if row.status == MutationStatus.QUARANTINED and row.record_id is not None]
    if not refused:
        return
    record_ids = [row.record_id for row in refused if row.record_id is not None]
    # Read under the records' locks, as every writer of them does: a head read before a
    # concurrent write commits would send back a copy already stale, or out of scope.
    lock_records(record_ids)
    publisher = Publisher()
    publisher.read_heads(record_ids)
    scopes = set(scopes_for_user(user))
    for row in refused:
        _send_back_servers_copy(row, publisher, scopes)
    publisher.flush()


def _send_back_servers_copy(row: LedgerRow, publisher: Publisher, writer_scopes: set[str]) -> None:
    """After a refused change of a record its writer may still see: the device's copy holds
    what the server did not take, so the record as it stands goes to the writer's devices
    through the feed (no new version), as after a conflict. A record the writer may not see
    (another program's, a unit left) is not sent: the refusal must not show it."""
    head = publisher.heads.get(row.record_id) if row.record_id is not None else None
    if head is not None and not writer_scopes.isdisjoint(head.scopes):
        publisher.reannounce(head, user_scope(row.user_id))


@dataclass
class _BatchState:
    context: registry.WriteContext
    publisher: Publisher
    records: dict[UUID, Any]
    versions: dict[UUID, list[merge.VersionView]]
    program_ids: set[UUID]
    raise_refusals: bool
    # Who writes each row, and which rows apply again after review (told_refused).
    writers: _Writers
    # Rows this apply puts back once the record they belong to was created (_release): their
    # device was told they were refused (told_refused). Not writers.released, which keeps
    # every row released in a one-at-a-time run, across its transactions, to release each
    # once: one released in an earlier of them and refused again is a kept create like any
    # other, which a later create of its record supersedes (_set_aside_superseded).
    released_here: set[int] = field(default_factory=set)
    # The batch's ledger rows' numbers on their device (a merge orders a device's own writes so).
    device_numbers: dict[int, int | None] = field(default_factory=dict)
    # Creates this batch has quarantined, by record: the record's later changes wait with them.
    quarantined_creates: dict[UUID, LedgerRow] = field(default_factory=dict)
    # Rows whose create made their record, new on the server (_create).
    created: set[int] = field(default_factory=set)
    # The scopes the writer reads, once a refused change needs them (_send_back_servers_copy).
    writer_scopes: set[str] | None = None
    # Where the device's last pull reached in the feed, if it said (_held_whole_after).
    pulled_through: FeedPosition | None = None
    # The request's last row of each record it changes: what the device holds once answered.
    last_of_their_record: frozenset[int] = frozenset()

    def told_refused(self, row: LedgerRow) -> bool:
        """Whether the row's device holds it as refused: it applies again after review, or
        once the record it belongs to was created. What it writes goes back to that device."""
        return row.pk in self.writers.reviewed or row.pk in self.released_here

    def scopes_of_writer(self) -> set[str]:
        if self.writer_scopes is None:
            self.writer_scopes = set(scopes_for_user(self.context.user))
        return self.writer_scopes


def _apply_rows(
    rows: list[LedgerRow],
    *,
    device: Device,
    user: User,
    writers: _Writers,
    raise_refusals: bool = False,
    sealed: dict[UUID | None, dict[Any, str]] | None = None,
    unstored_payloads: list[str] | None = None,
    pulled_through: FeedPosition | None = None,
    waiting: Sequence[Mutation] = (),
    kept_creates: Sequence[Mutation] = (),
    released: frozenset[int] = frozenset(),
) -> list[Mutation]:
    """Apply the rows in order, in the caller's transaction, and write their results to the
    ledger: over their rows, or, for rows not in the ledger yet (``unstored_payloads``, their
    payloads as the ledger keeps them), as new rows holding their results, before the
    versions that name them.

    ``waiting``: changes kept until a record these rows create is created
    (children_waiting_on). Each applies again right after the create it waited on, before the
    rows after that create (the device's later changes may build on it); returns those so
    applied. ``kept_creates``: the quarantined creates of the records these rows create
    (creates_kept_of), those these rows' creates supersede set aside (_set_aside_superseded).
    Rows released so, here or by the caller (``released``: _apply_in_savepoint's), go back to their
    device, which holds them as refused.
    The caller took the locks the rows' types name (and the waiting changes'), before its
    transaction's first write (lock_before_first_write); these take their records'."""
    assert unstored_payloads is None or not waiting, "released changes are rows of the ledger already"
    record_ids = _lock_records_changed([*rows, *waiting])
    publisher = Publisher()
    publisher.read_heads(record_ids)
    heads = publisher.heads
    by_type: dict[str, list[UUID]] = defaultdict(list)
    for record_id, head in heads.items():
        by_type[head.record_type].append(record_id)
    records: dict[UUID, Any] = {}
    for type_name, ids in by_type.items():
        synced_type = registry.get(type_name)
        if synced_type is not None:
            records.update(
                (record.pk, record)
                for record in synced_type.model._default_manager.filter(pk__in=bulk.any_of(ids, "uuid"))
            )
    versions = _merge_history([*rows, *waiting], heads)
    # What the ledger's copies already sealed, each record's own: the version reuses it.
    for sealed_id, memo in (sealed or {}).items():
        if sealed_id is not None:
            publisher.sealed.setdefault(sealed_id, {}).update(memo)
    context = registry.WriteContext(user=user, device=device, publisher=publisher)
    # Read under their locks: a change that looks one up (as a parent, or to write it too)
    # gets the instance the batch's own changes of it edit and publish.
    for record in records.values():
        context.remember(record)
    state = _BatchState(
        context=context,
        publisher=publisher,
        records=records,
        versions=versions,
        program_ids={program_id for program_id, _role in context.program_roles()},
        raise_refusals=raise_refusals,
        writers=writers,
        released_here=set(released),
        device_numbers={row.pk: row.mutation_id for row in [*rows, *waiting]},
        pulled_through=pulled_through,
        last_of_their_record=frozenset(
            {row.record_id: row.pk for row in rows if row.pk in writers.requested and row.record_id}.values()
        ),
    )
    fields_by_type: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for row in [*rows, *waiting]:
        if isinstance(row.payload, dict) and isinstance(row.payload.get("fields"), dict):
            fields_by_type[row.record_type].append(row.payload["fields"])
    waiting_on = _by_parent_waited_on(waiting)
    applied_again: list[Mutation] = []
    try:
        for type_name, fields_list in fields_by_type.items():
            synced_type = registry.get(type_name)
            if synced_type is not None and synced_type.prepare is not None:
                synced_type.prepare(state.context, fields_list)
        now = timezone.now()
        pending: list[LedgerRow] = list(reversed(rows))
        while pending:
            row = pending.pop()
            # Who writes, for what a domain service writes beside the record and audits itself
            # (a status time's assignment, a follow-up planned): as _audit_writes names them.
            state.context.accessor = writers.of(row)
            _apply_one(row, state)
            if row.status == MutationStatus.QUARANTINED:
                _send_back_servers_copy(row, state.publisher, state.scopes_of_writer())
            row.applied_at = now
            children = _release(row, waiting_on, writers, state.publisher.heads)
            state.released_here.update(child.pk for child in children)
            applied_again += children
            pending += reversed(children)  # next, in their order, before the rows after this one
        state.context.flush_inserts()
        if unstored_payloads is None:
            _save_results([*rows, *applied_again])
        else:
            _insert_ledger(rows, unstored_payloads, with_results=True)
        state.publisher.flush()
        _file_for_review([*rows, *applied_again])  # after the heads: a record the batch created has its program
        _set_aside_superseded(rows, kept_creates, state)
    except SoftTimeLimitExceeded:
        raise  # the stranded sweep's task is to stop, not to go on one mutation at a time
    except Exception:
        # A refusal, a database error, or a fault of the server's code on some mutation's
        # content: the batch is undone and applied one mutation at a time, where the culprit
        # is kept alone and the rest apply.
        if raise_refusals:
            raise
        raise _FallBack() from None
    return applied_again


def _by_parent_waited_on(waiting: Sequence[Mutation]) -> dict[UUID | None, list[Mutation]]:
    by_parent: dict[UUID | None, list[Mutation]] = defaultdict(list)
    for row in waiting:
        by_parent[_parent_waited_on(row)].append(row)
    return by_parent


def _created_its_record(row: LedgerRow, heads: dict[UUID, Head]) -> bool:
    """Whether this row is a create that left its record on the server, live (applied, or
    merged with one created before), ``heads`` holding the record's head since: the changes
    waiting on that record may apply. Not a create that met the record deleted (a conflict):
    what was made under it stays out, kept for review."""
    if row.operation != MutationOperation.CREATE or row.record_id is None:
        return False
    head = heads.get(row.record_id)
    return row.status in (MutationStatus.APPLIED, MutationStatus.CONFLICT) and head is not None and not head.is_deleted


def put_back_to_apply(mutations: QuerySet[Mutation]) -> None:
    """Put these quarantined changes back among their device's received ones, to apply again
    (apply_received, in the same transaction), as a review does."""
    mutations.update(**_put_back_to_apply_values())


def _put_row_back_to_apply(row: Mutation) -> None:
    """A quarantined change about to be applied again, released (_release), as a review puts
    it back (put_back_to_apply)."""
    for name, value in _put_back_to_apply_values().items():
        setattr(row, name, value)


def _put_back_to_apply_values() -> dict[str, Any]:
    """A quarantined change put back to apply: received, its refusal gone (its result is
    written when it applies, or it is refused again)."""
    return {"status": MutationStatus.RECEIVED, "result": {}, "error_code": "", "applied_at": None}


def lock_before_first_write(rows: Sequence[LedgerRow], *, types_locked: bool = False) -> set[UUID]:
    """Take the locks applying these rows waits for, before the transaction's first write:
    first those their types name (SyncedType.lock_before_writing: a domain's own, which its
    writers take before any other; not when ``types_locked``, the caller having taken them
    already), then those of the records they change and of the parents their creates are
    placed under: read after their locks, where they are is where no move of them is still
    under way (SyncedType.parent_field). Returns the ids of the records changed."""
    if not types_locked:
        _lock_what_types_name(_writes_as_sent(rows))
    return _lock_records_changed(rows)


def _lock_records_changed(rows: Sequence[LedgerRow]) -> set[UUID]:
    """The locks of the records these rows change and of the parents their creates are placed
    under (lock_before_first_write, the locks their types name taken already). Returns the
    ids of the records changed."""
    record_ids = {row.record_id for row in rows if row.record_id is not None}
    lock_records(record_ids | _parents_named_by_creates(rows))
    return record_ids


def _writes_as_sent(rows: Sequence[LedgerRow]) -> Iterator[tuple[str, registry.IncomingWrite]]:
    """Each row's record type and its write, by the row's user, as its device sent it."""
    for row in rows:
        fields = row.payload.get("fields") if isinstance(row.payload, dict) else None
        if isinstance(fields, dict):
            yield row.record_type, registry.IncomingWrite(row.user_id, row.operation, fields)


def _lock_what_types_name(changes: Iterable[tuple[str, registry.IncomingWrite]]) -> None:
    """The locks each record type takes before the first write of a transaction that applies
    these changes (record type, the write as sent): SyncedType.lock_before_writing."""
    writes_by_type: dict[str, list[registry.IncomingWrite]] = defaultdict(list)
    for type_name, write in changes:
        writes_by_type[type_name].append(write)
    if not writes_by_type:
        return
    for synced_type in registry.in_registration_order():  # one order for every writer: no deadlock
        writes = writes_by_type.get(synced_type.name)
        if writes and synced_type.lock_before_writing is not None:
            synced_type.lock_before_writing(writes)


def _parents_named_by_creates(rows: Sequence[LedgerRow]) -> set[UUID]:
    parents = set()
    for row in rows:
        synced_type = registry.get(row.record_type)
        if row.operation == MutationOperation.CREATE and synced_type is not None and synced_type.parent_field:
            parent_id = _id_named_by(row, synced_type.parent_field)
            if parent_id is not None:
                parents.add(parent_id)
    return parents


def children_waiting_on(
    rows: Sequence[LedgerRow],
    *,
    reviewed: frozenset[int] = frozenset(),
    sent_with: Iterable[tuple[UUID, UUID | None]] = (),
    kept_creates: Sequence[Mutation] | None = None,
) -> list[Mutation]:
    """What the creates among these rows release once they apply: their devices' creates kept
    in quarantine because the record they belong to was (``parent_quarantined``), naming a
    record one of them creates whose own create that device had refused before, or a record
    such a create creates in turn (an outcome of a referral of the encounter). In the order
    the ledger has them.

    A device may fix a refused create and send it again (a WatermelonDB app sends its rows
    until they are taken), or a supervisor may apply it after review: the records the
    clinician made under that record then apply with it, rather than waiting for a review of
    their own. Only creates: the device held what it made (the server never had the record),
    while over a record the server has it was sent the server's copy at refusal, so an update
    or a delete released would replace what the device holds unseen (P3). Not released, kept
    for review as before: a change set aside by a review; a create whose record has other
    changes in quarantine (the device's later edit or delete of it, which would be lost
    behind it); a create whose record the same device changes again among these rows, or
    ``sent_with`` them (device, record), whatever the change and wherever it stands: that
    change applies as the device's own (its parent exists now), while the old create,
    released, would come back to the device as a version it must take over what it holds
    (P3); a create whose record the server has by now (sent again under another record, or
    by another writer): released, it would meet it as a stale copy; the changes of a device
    locked out (revoked, or its user deactivated).
    ``reviewed``: rows a review took out of quarantine to apply again, refused creates still,
    and taken as no longer in quarantine, whether they are put back to apply yet or not (the
    review's locks and its apply find the same changes). ``kept_creates``: creates_kept_of
    these rows, when the caller has read them already."""
    creates = {
        (row.device_id, row.record_id, row.record_type)
        for row in rows
        if row.operation == MutationOperation.CREATE and row.record_id is not None
    }
    if not creates:
        return []
    # A parent whose create the same device had refused, of that type (a record of another
    # type made under its id is not the parent the change waits on): the only ones a change
    # is told it waits on to apply (_refusal_error).
    if kept_creates is None:
        kept_creates = creates_kept_of(rows)
    refused_before = {(row.device_id, row.record_id, row.record_type) for row in rows if row.pk in reviewed} | {
        (kept.device_id, kept.record_id, kept.record_type) for kept in kept_creates
    }
    created = {(device_id, record_id) for device_id, record_id, _type in creates & refused_before}
    devices = set(
        devices_not_locked_out(device_ids={device_id for device_id, _record_id in created}).values_list("pk", flat=True)
    )
    created = {(device_id, record_id) for device_id, record_id in created if device_id in devices}
    if not created:
        return []
    kept = list(
        Mutation.objects.filter(
            user_id__in=bulk.any_of({row.user_id for row in rows}, "uuid"),  # the index of quarantined rows
            device_id__in=bulk.any_of(devices, "uuid"),
            status=MutationStatus.QUARANTINED,
            error_code=_PARENT_QUARANTINED,
            operation=MutationOperation.CREATE,
            dismissed_at=None,
        )
        .exclude(pk__in=bulk.any_of(reviewed, "bigint"))
        .order_by("id")
    )
    changed_again = {(row.device_id, row.record_id) for row in rows} | set(sent_with)
    kept = [row for row in kept if (row.device_id, row.record_id) not in changed_again]
    held_back = _records_with_other_changes_kept(kept, reviewed=reviewed) | _records_on_the_server(kept)
    while True:
        waiting = _released_under(kept, created, held_back)
        # A record is released whole or not at all: another kept create of it that stays (one
        # the device sent again under a parent still refused) may hold what the user wrote
        # since, which the older one must not be sent back over. Then neither is released,
        # nor what waits under it.
        releasing = {row.record_id for row in waiting}
        released_pks = {row.pk for row in waiting}
        left_behind = {row.record_id for row in kept if row.record_id in releasing and row.pk not in released_pks}
        if not left_behind:
            return sorted(waiting, key=lambda row: row.pk)
        held_back |= left_behind


def creates_kept_of(rows: Sequence[LedgerRow]) -> list[Mutation]:
    """The quarantined creates (set aside or not) of the records the creates among these rows
    make, by those rows' devices, in the ledger's order: what those creates may release
    (children_waiting_on) or supersede (_set_aside_superseded). Found by record and device,
    as the index of quarantined rows has them; no query when the rows create nothing, and
    none comes back for a device with nothing of those records in quarantine (the usual push)."""
    created = {row.record_id for row in rows if row.operation == MutationOperation.CREATE and row.record_id}
    if not created:
        return []
    return list(
        Mutation.objects.filter(
            record_id__in=bulk.any_of(created, "uuid"),
            device_id__in=bulk.any_of({row.device_id for row in rows}, "uuid"),
            status=MutationStatus.QUARANTINED,
            operation=MutationOperation.CREATE,
        ).order_by("id")
    )


# What a later create need not send again to account for a kept one: when and as which
# mutation it was sent, and the base a create ignores (_superseded_by).
_KEYS_OF_EACH_SENDING = frozenset({"mutation_id", "base_version", "observed_at"})
# Why a kept create may be superseded: its content, or its parent's, which the device's later
# create fixed, found as it was applied. Never who sent it (a deactivated user's or a revoked
# device's handover, not_permitted, not_author), a fault, or its shape as sent (which names
# the first problem only: a handover's may be malformed too): a supervisor reads those,
# whatever the device sends after.
_SUPERSEDABLE_REFUSALS = frozenset({_PARENT_QUARANTINED, "parent_not_found", "invalid_fields", "time_in_future"})


def _set_aside_superseded(rows: Sequence[LedgerRow], kept_creates: Sequence[Mutation], state: _BatchState) -> None:
    """Set aside the device's older creates of a record kept in quarantine that its later
    create, among these rows, has made on the server since: a WatermelonDB app sends a
    record it made again until it is taken, with what the user wrote since, and the create
    that applies holds it; the older ones (kept under a parent then refused, or refused
    themselves) would only wait in the reviewers' queue for a person to set them aside.

    Each stays in quarantine as it was sent, readable by its writer and kept for good (P1),
    set aside as the server's: ``superseded``, by the later create's writer, naming that
    create, in the transaction that applied it. Only where that create accounts for all of
    it (_superseded_by): the same device's and user's create of the same record, older in
    the device's order, sending every field the kept one did and nothing else besides; and
    only by a create that made the record as its device sent it (applied, not merged into a
    record the server had, not a conflict, not deleted since in the batch), applied as the
    device's own (not after review, not released). Updates and deletes kept, and another
    device's changes, are never touched: they are others' edits, or edits made since.
    No query when nothing is kept (``kept_creates``: creates_kept_of these rows)."""
    if not kept_creates:
        return
    still_kept: dict[tuple[UUID, UUID | None], list[Mutation]] = defaultdict(list)
    for kept in kept_creates:
        if kept.dismissed_at is None and not state.told_refused(kept):
            still_kept[(kept.device_id, kept.record_id)].append(kept)
    now = timezone.now()
    for row in rows:
        candidates = still_kept.get((row.device_id, row.record_id))
        if not candidates or not _made_its_record_as_sent(row, state):
            continue
        superseded = [kept for kept in candidates if kept.dismissed_at is None and _superseded_by(kept, row)]
        if not superseded:
            continue
        named = f" (mutation_id {row.mutation_id})" if row.mutation_id is not None else ""
        # Under the device's lock, which every review takes too.
        set_aside(
            Mutation.objects.filter(pk__in=[kept.pk for kept in superseded], device_id=row.device_id),
            by=row.user_id,
            reason=f"Superseded: this device sent the record's create again later{named}, and that create "
            "applied, holding every field this one sent. This one is kept as it was sent.",
            code=DismissCode.SUPERSEDED,
            superseded_by=row.pk,
        )
        for kept in superseded:
            kept.dismissed_at = now


def set_aside(
    mutations: QuerySet[Mutation], *, by: UUID, reason: str, code: DismissCode, superseded_by: int | None = None
) -> None:
    """Set aside those of ``mutations`` still kept for review (quarantined, not set aside yet):
    each stays in quarantine, kept as it was sent, out of the reviewers' queue, its writer
    told who set it aside, when and why (``code``: by a supervisor after review, or
    superseded by its device's later create, ``superseded_by``)."""
    mutations.filter(AWAITING_REVIEW).update(
        dismissed_at=timezone.now(),
        dismissed_by_id=by,
        dismiss_reason=reason,
        dismiss_code=code,
        superseded_by_id=superseded_by,
    )


def _made_its_record_as_sent(row: LedgerRow, state: _BatchState) -> bool:
    """Whether this row is a create that made its record new on the server, as its device's
    own write (not one applied after review or released), and the record is still there."""
    return (
        row.pk in state.created
        and not state.told_refused(row)
        and row.status == MutationStatus.APPLIED
        and _created_its_record(row, state.publisher.heads)
    )


def _superseded_by(kept: Mutation, later: LedgerRow) -> bool:
    """Whether ``later``, a create that applied, accounts for all of ``kept``, a create of the
    same record kept in quarantine: the same device's and user's, of the same type, made
    before it (in the ledger's order, in the device's numbering, and by the device's clock
    where both carry a time: a device restored from a backup sends older text again), and
    every field it sent is sent again, and no key besides that the push reads (_MUTATION_KEYS)."""
    if (
        kept.operation != MutationOperation.CREATE
        or kept.error_code not in _SUPERSEDABLE_REFUSALS
        or unreadable_as_sent(kept)
        or (kept.device_id, kept.user_id, kept.record_type, kept.record_id)
        != (later.device_id, later.user_id, later.record_type, later.record_id)
        or kept.pk >= later.pk
    ):
        return False
    if kept.mutation_id is not None and later.mutation_id is not None and kept.mutation_id >= later.mutation_id:
        return False
    if kept.observed_at is not None and later.observed_at is not None and kept.observed_at > later.observed_at:
        return False
    sent, sent_later = kept.payload, later.payload
    if not isinstance(sent, dict) or not isinstance(sent_later, dict):
        return False
    # A key the push does not read (kept as ``unknown_field``) carried what no create accounts
    # for; so did one the later create does not send (the app's own row, ``content``).
    if not set(sent) <= _MUTATION_KEYS or not set(sent) - _KEYS_OF_EACH_SENDING <= set(sent_later):
        return False
    fields, fields_later = sent.get("fields") or {}, sent_later.get("fields") or {}
    return isinstance(fields, dict) and isinstance(fields_later, dict) and set(fields) <= set(fields_later)


def _released_under(
    kept: Sequence[Mutation], created: set[tuple[UUID, UUID]], held_back: set[UUID | None]
) -> list[Mutation]:
    """The kept creates that wait, as their device's, on a record ``created`` names, or on one
    released so in turn, but for records ``held_back``."""
    created = set(created)
    waiting: dict[int, Mutation] = {}
    found = True
    while found:  # a create under one released may be older than it: look again
        found = False
        for row in kept:
            if (
                row.pk in waiting
                or row.record_id is None
                or row.record_id in held_back
                or (row.device_id, _parent_waited_on(row)) not in created
            ):
                continue
            waiting[row.pk] = row
            found = True
            created.add((row.device_id, row.record_id))
    return list(waiting.values())


def _records_with_other_changes_kept(
    creates: Sequence[Mutation], *, reviewed: frozenset[int] = frozenset()
) -> set[UUID | None]:
    """The records of these quarantined creates that have another change in quarantine, set
    aside or not, other than such a create (an edit or a delete of the record made since, a
    change of it from elsewhere: one set aside still says the user changed the record after
    that create) or one a review applies again (``reviewed``: the review's own rows, which
    children_waiting_on finds among the rows it applies). The device's own creates of one
    record, each sent again with what the user wrote since (as a WatermelonDB app does),
    apply in their order, all of them or none (children_waiting_on)."""
    if not creates:
        return set()
    return set(
        Mutation.objects.filter(
            record_id__in=bulk.any_of({row.record_id for row in creates if row.record_id is not None}, "uuid"),
            status=MutationStatus.QUARANTINED,
        )
        .exclude(pk__in=bulk.any_of({row.pk for row in creates} | reviewed, "bigint"))
        .values_list("record_id", flat=True)
    )


def _records_on_the_server(creates: Sequence[Mutation]) -> set[UUID | None]:
    """The records of these quarantined creates that the server has by now (a head, deleted
    or not): the device sent the record again otherwise, or another writer created it."""
    if not creates:
        return set()
    return set(heads_written(record_ids={row.record_id for row in creates if row.record_id is not None}))


def _parent_waited_on(row: LedgerRow) -> UUID | None:
    """The record a ``parent_quarantined`` change waits on: the one the field its refusal
    names holds (``fields.encounter_id``)."""
    error = row.result.get("error") if isinstance(row.result, dict) else None
    named = error.get("field") if isinstance(error, dict) else None
    if not isinstance(named, str) or not named.startswith("fields."):
        return None
    return _id_named_by(row, named.removeprefix("fields."))


def _merge_history(rows: list[LedgerRow], heads: dict[UUID, Head]) -> dict[UUID, list[merge.VersionView]]:
    """Each record's versions a three-way merge of this batch may need: from the oldest
    base a mutation names. A device that saw the newest version merges against the head
    alone, so its versions are not read."""
    oldest_base: dict[UUID, int] = {}
    for row in rows:
        head = heads.get(row.record_id) if row.record_id is not None else None
        if head is None:
            continue
        base = 0 if row.operation == MutationOperation.CREATE else row.base_version or 0
        if base < head.version:
            oldest_base[head.record_id] = min(base, oldest_base.get(head.record_id, base))
    versions: dict[UUID, list[merge.VersionView]] = defaultdict(list)
    for record_id, head in heads.items():
        if record_id not in oldest_base:
            versions[record_id].append(
                merge.VersionView(
                    version=head.version, data=head.data, device_id=None, changed_fields=(), is_deleted=head.is_deleted
                )
            )
    if oldest_base:
        stored_versions = (
            RecordVersion.objects.filter(
                record_id__in=bulk.any_of(oldest_base, "uuid"), version__gte=min(oldest_base.values())
            )
            .annotate(made_as=F("mutation__mutation_id"))
            .order_by("record_id", "version")
        )
        for version in stored_versions:
            versions[version.record_id].append(_view(version, version.made_as))
    return versions


def _save_results(rows: list[LedgerRow]) -> None:
    """One statement for the whole batch's results (Django's bulk_update builds a CASE per
    row and column, which cost more than applying the mutations). A result's data is its
    version's, which the ledger does not repeat: a replay reads it back from the version."""
    with bulk.server_cursor() as cursor:
        cursor.execute(
            "UPDATE sync_mutation AS m SET status = r.status, result = r.result, error_code = r.error_code,"
            " applied_at = r.applied_at"
            " FROM unnest(%b::bigint[], %b::text[], %b::jsonb[], %b::text[], %b::timestamptz[])"
            " AS r(id, status, result, error_code, applied_at) WHERE m.id = r.id",
            [
                [row.pk for row in rows],
                [row.status for row in rows],
                [_stored_result(row.result) for row in rows],
                [row.error_code for row in rows],
                [row.applied_at for row in rows],
            ],
        )


def _view(version: RecordVersion | PendingVersion, made_as: int | None) -> merge.VersionView:
    return merge.VersionView(
        version=version.version,
        data=version.data,
        device_id=version.device_id,
        changed_fields=version.changed_fields,
        is_deleted=version.is_deleted,
        mutation_id=version.mutation_id,
        made_as=made_as,
        held_by_writer=version.held_by_writer,
    )


def _quarantined_create(user_id: UUID, record_id: UUID) -> Mutation | None:
    """The user's quarantined create of this record, if there is one: what a later change of
    a record the server does not have most often follows."""
    return (
        Mutation.objects.filter(
            status=MutationStatus.QUARANTINED,
            user_id=user_id,
            record_id=record_id,
            operation=MutationOperation.CREATE,
        )
        .order_by("id")
        .first()
    )


def _create_kept_for_review(record_id: UUID) -> bool:
    """Whether anyone's create of this record is in quarantine: a review may yet bring the
    record to life, after a delete of it answered as settled."""
    return Mutation.objects.filter(
        record_id=record_id, operation=MutationOperation.CREATE, status=MutationStatus.QUARANTINED
    ).exists()


def _waits_for(create: LedgerRow, what: str, then: str = "for review together") -> str:
    named = f" (mutation_id {create.mutation_id})" if create.mutation_id is not None else ""
    return f"{what}{named} is in quarantine; this change is kept with it, {then}."


def _quarantine(row: LedgerRow, code: str, detail: str, field_name: str | None = None) -> None:
    row.status = MutationStatus.QUARANTINED
    row.error_code = code
    row.result = _result(row, PushStatus.QUARANTINED, error=_error(code, detail, field_name))


def _validate(
    synced_type: registry.SyncedType, row: LedgerRow, fields: dict[str, Any], *, partial: bool
) -> tuple[dict[str, Any], dict[str, Any]] | None:
    """Validate wire fields; returns (internal values, normalised wire values) or quarantines.
    A create (not ``partial``) gets no wire values: nothing merges with them."""
    serializer = registry.bound_serializer(synced_type.serializer, partial=partial)
    internal: dict[str, Any] | None = registry.validation(synced_type.serializer, partial=partial)(fields)
    if internal is None:  # the compiled checks could not vouch for it: DRF decides
        try:
            internal = dict(serializer.run_validation(fields))
        except serializers.ValidationError as error:
            flat = _first_error(error.detail)
            _quarantine(row, "invalid_fields", flat[1], f"fields.{flat[0]}" if flat[0] else "fields")
            return None
    if not partial:
        return internal, {}  # a create merges with nothing: its wire form is what it stores
    wire = {
        name: serializer.fields[name].to_representation(value) if value is not None else None
        for name, value in internal.items()
    }
    # Round-trip through JSON so values compare like the stored wire form.
    wire = json.loads(json.dumps(wire, default=str))
    return internal, wire


def _first_error(errors: Any, path: str = "") -> tuple[str, str]:
    if isinstance(errors, dict):
        for key, value in errors.items():
            child = key if key != "non_field_errors" else ""
            return _first_error(value, f"{path}.{child}".strip(".") if child else path)
    if isinstance(errors, list) and errors:
        return _first_error(errors[0], path)
    return path, str(errors)


def _apply_one(row: LedgerRow, state: _BatchState) -> None:
    if row.status != MutationStatus.RECEIVED:
        return
    synced_type = registry.get(row.record_type)
    if synced_type is None:
        _quarantine(row, "unknown_record_type", f"No record type {row.record_type!r} syncs here.", "type")
        return
    assert row.record_id is not None
    fields = (row.payload.get("fields") if isinstance(row.payload, dict) else None) or {}  # null: none
    head = state.publisher.heads.get(row.record_id)
    record = state.records.get(row.record_id)
    context = state.context
    if head is not None and head.program_id not in state.program_ids:
        # Another program's record: the id is not this device's to use.
        _quarantine(row, "not_permitted", "This record may not be changed by this user.", "id")
        return
    if head is not None and head.record_type != synced_type.name:
        # Named as REST names it (409 id_in_use), saying nothing of the record that holds it:
        # not_permitted sent the writer looking for a permission they have.
        _quarantine(row, "id_in_use", "This id is in use by another record; use a new one.", "id")
        return
    if head is None:
        if row.operation != MutationOperation.CREATE:
            create = state.quarantined_creates.get(row.record_id) or _quarantined_create(row.user_id, row.record_id)
            if create is not None:
                _quarantine(row, "record_quarantined", _waits_for(create, "This record's create"), "id")
            elif row.operation == MutationOperation.DELETE and not _create_kept_for_review(row.record_id):
                # A record made and deleted on the device before it was ever pushed (what
                # WatermelonDB's markAsDeleted sends): it is gone as the device meant, and
                # nothing of it reached the server. Refused, the app would send it forever.
                row.status = MutationStatus.APPLIED
                row.result = _result(row, PushStatus.APPLIED)
            else:
                _quarantine(row, "record_not_found", "No such record (it was never pushed, or not by this user).", "id")
            return
        _create(row, synced_type, fields, state)
        if row.status == MutationStatus.QUARANTINED:
            state.quarantined_creates[row.record_id] = row
        return
    if record is None:
        raise DatabaseError(f"synced record {row.record_id} has a head but no row")
    if not synced_type.may_write(context, record, {}):
        _quarantine(row, "not_permitted", "This user may no longer change this record.", "id")
        return
    # Stored versions, and those this batch wrote and has not flushed yet.
    versions = state.versions.get(row.record_id, []) + [
        _view(version, state.device_numbers.get(version.mutation_id) if version.mutation_id is not None else None)
        for version in state.publisher.pending_versions.get(row.record_id, ())
    ]
    base_version = row.base_version or 0
    if row.operation == MutationOperation.CREATE:
        base_version = 0  # created offline twice, or replayed: merge against nothing
    if base_version > head.version:
        _quarantine(
            row, "invalid_base_version", f"base_version is ahead of the server ({head.version}).", "base_version"
        )
        return
    if row.operation == MutationOperation.DELETE:
        _delete(row, synced_type, record, head, base_version, versions, state)
        return
    validated = _validate(synced_type, row, fields, partial=True)
    if validated is None:
        return
    internal, wire = validated
    if internal and not synced_type.may_write(context, record, internal):
        _quarantine(row, "not_permitted", "This user may not make this change.", "fields")
        return
    if (
        row.operation == MutationOperation.CREATE
        and not head.is_deleted
        and synced_type.create_repeats is not None
        and synced_type.create_repeats(record, internal)
    ):
        # The record as it stands, sent again (SyncedType.create_repeats): nothing to write.
        # The device's copy may hold what the record does not (its own time, where the server
        # kept the one it took over REST), and its own earlier write never came back to it: a
        # client that ignores push results (WatermelonDB) gets the record through its feed.
        if state.told_refused(row) or any(head.data.get(name, merge.MISSING) != value for name, value in wire.items()):
            state.publisher.reannounce(head, user_scope(row.user_id))
        row.status = MutationStatus.APPLIED
        row.result = _result(row, PushStatus.APPLIED, version=head.version, data=head.data, repeated=True)
        return
    base = merge.effective_base(
        base_version=base_version,
        versions=versions,
        device_id=context.device and context.device.pk,
        made_before=row.pk,
        made_as=row.mutation_id,
    )
    if base is None:
        _quarantine(row, "invalid_base_version", "The base version is unknown.", "base_version")
        return
    if head.is_deleted and _brings_back(row.payload):
        # Answered as settled, the app would show the record live while the server keeps it
        # deleted, and its later edits would wait in conflicts it never hears of.
        _quarantine(
            row,
            "record_deleted",
            "This record is deleted on the server, and its deletion stands: no device brings it back. "
            "The change is kept for a supervisor to read and set aside.",
            "fields.deleted",
        )
        return
    if head.is_deleted:
        # An edit that meets a delete: the record stays deleted, and what the edit would
        # change of it is kept as a conflict. A value the record held when it was deleted
        # changes nothing and settles, as an equal value does on a live record: a conflict
        # with nothing to decide would only wait for a case manager.
        changed = {
            name: value
            for name, value in wire.items()
            if base.get(name, merge.MISSING) != value and head.data.get(name, merge.MISSING) != value
        }
        if not changed:
            row.status = MutationStatus.APPLIED
            row.result = _result(row, PushStatus.APPLIED, version=head.version, data=head.data)
            return
        _refused_by_domain(synced_type, row, record, internal, state)
        conflicts = [
            _conflict(
                row, synced_type, head, ConflictKind.EDIT_VS_DELETE, name, base.get(name), head.data.get(name), value
            )
            for name, value in sorted(changed.items())
        ]
        state.publisher.conflicts += conflicts
        row.status = MutationStatus.CONFLICT
        row.result = _result(
            row,
            PushStatus.CONFLICT,
            version=head.version,
            data=head.data,
            conflicts=[_conflict_wire(conflict) for conflict in conflicts],
        )
        return
    merged = merge.merge_fields(base=base, current=head.data, incoming=wire, attests=synced_type.attests)
    if merged.conflicts:
        _refused_by_domain(synced_type, row, record, internal, state)
    conflicts = [
        _conflict(row, synced_type, head, ConflictKind.SAME_FIELD, item.field, item.base, item.server, item.device)
        for item in merged.conflicts
    ]
    changes = {name: internal[name] for name in merged.changes}
    # The record holds what the device's base did not: others' changes merged in, or a
    # colleague's value kept in a conflict. The device gets it back through the feed, so even
    # a client that ignores push results (WatermelonDB) takes the newer version as its base.
    unseen = bool(conflicts) or merge.changed_by_others_since(
        base_version=base_version, versions=versions, device_id=context.device and context.device.pk
    )
    new_head = head
    if changes:
        new_head = _write(
            row,
            synced_type,
            registry.Change(MutationOperation.UPDATE, row.record_id, record, changes),
            state,
            changed_fields=sorted(changes),
            echo=unseen or state.told_refused(row),
            held_by_writer=merge.holds_all_sent(merged, current=head.data, incoming=wire)
            and _held_whole_after(row, head, state),
        )
    elif unseen:
        state.publisher.reannounce(head, user_scope(row.user_id))
    state.publisher.conflicts += conflicts
    status = PushStatus.CONFLICT if conflicts else PushStatus.APPLIED
    row.status = MutationStatus.CONFLICT if conflicts else MutationStatus.APPLIED
    row.result = _result(
        row,
        status,
        version=new_head.version,
        data=new_head.data,
        conflicts=[_conflict_wire(conflict) for conflict in conflicts],
    )


def _brings_back(payload: Any) -> bool:
    """Whether a WatermelonDB app brought the record back: the row it sent (the mutation's
    content) names ``deleted`` among its changed columns, and holds false. Other clients'
    ``deleted`` is read-only, and ignored as such."""
    content = payload.get("content") if isinstance(payload, dict) else None
    if not isinstance(content, dict) or content.get("deleted") is not False:
        return False
    changed = content.get("_changed")
    return isinstance(changed, str) and "deleted" in changed.split(",")


def _refused_by_domain(
    synced_type: registry.SyncedType, row: LedgerRow, record: Any, values: dict[str, Any], state: _BatchState
) -> None:
    """Raise the domain's refusal of a change about to be kept as a conflict: such a change
    never reaches ``apply``, and one no one may apply (a signed note's, an append-only
    record's) is quarantined saying why, as it is when it merges, not left to a case manager."""
    if synced_type.refuses_change is not None:
        synced_type.refuses_change(state.context, record, row.operation, values)


def _create(row: LedgerRow, synced_type: registry.SyncedType, fields: dict[str, Any], state: _BatchState) -> None:
    validated = _validate(synced_type, row, fields, partial=False)
    if validated is None:
        return
    internal, _wire = validated
    if not synced_type.may_write(state.context, None, internal):
        # Named by the field that says where the record belongs (its unit, its parent).
        where = synced_type.program_from[1] if synced_type.program_from is not None else None
        _quarantine(
            row, "not_permitted", "This user may not create this record here.", f"fields.{where}" if where else "fields"
        )
        return
    assert row.record_id is not None
    head = _write(
        row,
        synced_type,
        registry.Change(MutationOperation.CREATE, row.record_id, None, internal),
        state,
        changed_fields=None,
        echo=state.told_refused(row),
        held_by_writer=_held_whole_after(row, None, state),
    )
    row.status = MutationStatus.APPLIED
    row.result = _result(row, PushStatus.APPLIED, version=head.version, data=head.data)
    state.created.add(row.pk)


def _delete(
    row: LedgerRow,
    synced_type: registry.SyncedType,
    record: Any,
    head: Head,
    base_version: int,
    versions: list[merge.VersionView],
    state: _BatchState,
) -> None:
    device_id = state.context.device and state.context.device.pk
    if head.is_deleted:
        row.status = MutationStatus.APPLIED
        row.result = _result(row, PushStatus.APPLIED, version=head.version, data=head.data)
        return
    if merge.changed_by_others_since(
        base_version=base_version, versions=versions, device_id=device_id, made_before=row.pk, made_as=row.mutation_id
    ):
        # A delete that meets an edit its device never saw: the record and the edit stay.
        _refused_by_domain(synced_type, row, record, {}, state)
        conflict = _conflict(row, synced_type, head, ConflictKind.DELETE_VS_EDIT, "", None, None, None)
        state.publisher.conflicts.append(conflict)
        state.publisher.reannounce(head, user_scope(row.user_id))  # the device gets the record back
        row.status = MutationStatus.CONFLICT
        row.result = _result(
            row, PushStatus.CONFLICT, version=head.version, data=head.data, conflicts=[_conflict_wire(conflict)]
        )
        return
    new_head = _write(
        row,
        synced_type,
        registry.Change(MutationOperation.DELETE, head.record_id, record, {}),
        state,
        changed_fields=["deleted"],
        echo=state.told_refused(row),
        is_deleted=True,
        held_by_writer=_held_whole_after(row, head, state),
    )
    row.status = MutationStatus.APPLIED
    row.result = _result(row, PushStatus.APPLIED, version=new_head.version, data=new_head.data)


def _write(
    row: LedgerRow,
    synced_type: registry.SyncedType,
    change: registry.Change,
    state: _BatchState,
    *,
    changed_fields: list[str] | None,
    echo: bool,
    is_deleted: bool = False,
    held_by_writer: bool = False,
) -> Head:
    saved = synced_type.apply(state.context, change)
    state.records[change.record_id] = saved
    return state.publisher.publish(
        synced_type,
        saved,
        user=state.context.user,
        # A change applied after review is not its device's own write to merge over: the
        # device was told it was refused and took the server's copy back, so what it made
        # since was made without it, and meeting it is a conflict, not a replacement.
        device=None if row.pk in state.writers.reviewed else state.context.device,
        mutation_id=row.pk,
        changed_fields=changed_fields,
        is_deleted=is_deleted,
        echo_to_origin=echo,
        held_by_writer=held_by_writer,
    )


def _held_whole_after(row: LedgerRow, head_before: Head | None, state: _BatchState) -> bool:
    """Whether the device holds the version this row writes whole once answered: it said
    where its last pull reached, which was past every version before this one (the head's
    transaction ended below it), and this row is its request's last change of the record.
    A WatermelonDB app then edits that version next while still naming the older
    ``server_version`` it keeps for a record it had changed when it pulled; counted from
    here, a colleague's value it saw is no longer taken for one it never saw."""
    pulled = state.pulled_through
    if pulled is None or row.pk not in state.last_of_their_record:
        return False
    if head_before is None:
        return True
    written = head_before.written_in_transaction
    return written is not None and pulled.is_past(written)


def _conflict(
    row: LedgerRow,
    synced_type: registry.SyncedType,
    head: Head,
    kind: str,
    field_name: str,
    base_value: Any,
    server_value: Any,
    device_value: Any,
) -> Conflict:
    return Conflict(
        program_id=head.program_id,
        record_type=synced_type.name,
        record_id=head.record_id,
        kind=kind,
        field=field_name,
        base_value=base_value,
        server_value=server_value,
        device_value=device_value,
        server_version=head.version,
        is_clinical_text=field_name in synced_type.clinical_text_fields,
        mutation_id=row.pk,
        device_id=row.device_id,
        user_id=row.user_id,
    )


def _conflict_wire(conflict: Conflict) -> dict[str, Any]:
    return {"id": str(conflict.id), "kind": conflict.kind, "field": conflict.field or None}


def apply_stranded(*, older_than: timedelta) -> int:
    """Apply mutations stored but left unapplied (the server died between storing and
    applying, and the device has not come back to retry). Returns how many devices."""
    cutoff = timezone.now() - older_than
    stranded = (
        Mutation.objects.filter(status=MutationStatus.RECEIVED, received_at__lte=cutoff)
        .values_list("device_id", "user_id")
        .distinct()
    )
    devices = 0
    for device_id, user_id in stranded:
        device = Device.objects.filter(pk=device_id).first()
        user = User.objects.filter(pk=user_id).first()
        if device is None or user is None:
            continue
        try:
            apply_received(device=device, user=user)
        except _TRANSIENT as fault:  # the next run retries this device; the others go on now
            logger.warning("Stranded mutations of device %s not applied yet: %s", device_id, type(fault).__name__)
            continue
        except SoftTimeLimitExceeded:
            # The task's soft time limit, its warning before the worker is killed: stop here. The
            # device's mutations not applied stay received; they and the other devices' are the
            # next run's.
            raise
        except Exception as fault:  # noqa: BLE001 - one device's fault must not hold back the others
            # A fault beyond one mutation (a ledger row no configured key opens, say): the
            # device's pushes fail the same way, loudly; the log names where, never content.
            logger.error("Stranded mutations of device %s could not be applied: %s", device_id, _fault_and_place(fault))
            continue
        devices += 1
    return devices
