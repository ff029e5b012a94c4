"""Writes of the sync mechanism: the change feed, record heads and versions, scope changes.

Domain services call ``lock_records`` before they change a synced record and
``publish_record`` after, inside their own transaction; the push path (apps.sync.push)
uses the same machinery for a whole batch at once.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any
from uuid import UUID

from asgiref.sync import async_to_sync
from celery.exceptions import SoftTimeLimitExceeded
from django.db import connection, models, transaction
from django.db.models import Max, Q
from django.db.models.expressions import RawSQL
from django.utils import timezone
from rest_framework.exceptions import ValidationError

from apps.accounts.models import Device, Role, User
from apps.audit.models import AccessAction
from apps.audit.services import Accessor, record_access
from apps.common import bulk, jsontext
from apps.common.api.errors import DomainError
from apps.common.locks import advisory_lock_key, lock_in_order
from apps.sync import nudges, registry, sealing
from apps.sync.models import (
    ChangeEntry,
    ChangeOperation,
    Conflict,
    ConflictKind,
    FeedRetention,
    IssuedCursor,
    RemoveReason,
    ScopeChange,
    SyncedRecord,
    UserScopeState,
)
from apps.sync.scopes import audience_of, scopes_for_user, user_scope
from apps.sync.selectors import audiences_of

logger = logging.getLogger(__name__)

_UPSERT = ChangeOperation.UPSERT.value
_REMOVE = ChangeOperation.REMOVE.value
# Joins a short list into one array element for unnest (never appears in scopes or names).
_SEPARATOR = "\x1f"
# Advisory-lock namespaces, so a device lock never collides with a record lock.
RECORD_LOCKS = b"tandem.record"
DEVICE_LOCKS = b"tandem.device"


def lock_records(record_ids: Iterable[UUID]) -> None:
    """Serialise writers of these records until the transaction ends.

    Every writer of a synced record (a push, a case manager in the admin, a domain service)
    takes this lock before it writes them, in one fixed order, so versions are numbered
    without gaps or forks and no two writers deadlock. Only a domain's own locks, which its
    writers take before any other, come before it: a unit's board, which a push and a review
    take first too (SyncedType.lock_before_writing). It also covers records that do not
    exist yet.
    """
    lock_in_order(RECORD_LOCKS, record_ids)


def lock_device(device_id: UUID) -> None:
    """One push of a device at a time: a retry waits for the attempt it repeats."""
    assert connection.in_atomic_block, "lock_device needs a transaction"
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_advisory_xact_lock(%s)", [advisory_lock_key(DEVICE_LOCKS, device_id)])


def device_lock_held(device_id: UUID) -> bool:
    """Whether a transaction holds the device's push lock now: a push of it is under way."""
    key = advisory_lock_key(DEVICE_LOCKS, device_id)
    with connection.cursor() as cursor:
        # A bigint advisory lock shows in pg_locks as its high and low halves.
        cursor.execute(
            "SELECT EXISTS (SELECT FROM pg_locks WHERE locktype = 'advisory' AND granted AND objsubid = 1"
            " AND classid::bigint = %s AND objid::bigint = %s)",
            [(key >> 32) & 0xFFFF_FFFF, key & 0xFFFF_FFFF],
        )
        row = cursor.fetchone()
    return bool(row and row[0])


def record_change(
    *,
    program_id: UUID,
    record_type: str,
    record_id: UUID,
    scopes: Iterable[str],
    data: dict[str, Any],
    operation: ChangeOperation = ChangeOperation.UPSERT,
    origin_device_id: UUID | None = None,
) -> list[ChangeEntry]:
    """Append a change to the feed of every scope that may see it.

    Must run inside the transaction that made the change: the entries commit (or roll
    back) with it, and connected devices are nudged only after the commit.
    """
    scopes = sorted(set(scopes))
    entries = ChangeEntry.objects.bulk_create(
        [
            ChangeEntry(
                program_id=program_id,
                scope=scope,
                record_type=record_type,
                record_id=record_id,
                operation=operation,
                data=data,
                origin_device_id=origin_device_id,
            )
            for scope in scopes
        ]
    )
    transaction.on_commit(lambda: nudge_scopes(scopes))
    return entries


def nudge_scopes(scopes: Iterable[str]) -> None:
    """Tell connected devices reading these scopes to pull, now. Carries no data: a lost
    nudge delays a device until its next pull, it never loses a change."""
    # In the order given (a crew's scope before the dispatchers'), each scope once. One
    # async_to_sync for all: each call costs a thread, an event loop and a connection.
    once = list(dict.fromkeys(scopes))
    try:
        async_to_sync(nudges.send_nudges)(once)
    except SoftTimeLimitExceeded:
        # A task's soft time limit struck while it waited on the nudge: the task stops after
        # the change it committed (the transaction's later on-commit work is dropped; what it
        # queues, such as notifications, is queued again by its own sweep).
        raise
    except Exception:
        # Sent after commit: the change stands, and its devices read it at their next pull or
        # safety poll. Raised, it would answer a committed write with a 500 (and skip the
        # transaction's later on-commit work, such as queueing an alert's notifications).
        logger.exception("feed nudge of %d scopes failed", len(once))


@dataclass(slots=True)
class PendingVersion:
    """A version a Publisher has computed and not written yet (what a merge reads of it)."""

    record_id: UUID
    record_type: str
    version: int
    data: dict[str, Any]
    document: int  # ``data`` as stored: its number (from 1) in the Publisher's documents
    changed_fields: list[str]
    is_deleted: bool
    user_id: UUID | None
    device_id: UUID | None
    mutation_id: int | None
    held_by_writer: bool = False


@dataclass(slots=True)
class Head:
    """A record's head (``SyncedRecord``'s columns) as a Publisher reads and writes it."""

    record_id: UUID
    record_type: str
    program_id: UUID
    version: int
    data: dict[str, Any]
    scopes: list[str]
    is_deleted: bool
    # The transaction that wrote it, as read (None: written by this one, not committed yet).
    written_in_transaction: int | None = None


@dataclass(slots=True)
class _PendingHead:
    head: Head
    document: int


class WrittenSinceTransactionBegan(DomainError):
    """A record was written by a transaction younger than the one about to write it again.

    The feed serves changes in the order of their transactions' ids, which a transaction
    takes at its first write: one that wrote something before taking a record's lock, and
    waited for it while a younger one wrote the record and committed, would have its newer
    version served before that older one, and devices would end on the older (a record
    removed from a unit's devices, then put back on them). Every writer takes its records'
    locks before its first write; this refuses, without saving anything, a write that did not.
    """

    def __init__(self) -> None:
        super().__init__(
            "This record was changed by someone else while this change was being made; nothing was saved. Try again.",
            code="concurrent_change",
        )


class RecordIdHeld(DomainError):
    """A record was about to be published under an id sync holds for another record: of another
    type, or of another program. Published, it would take that record's place in every feed
    and snapshot, and the other's writers would be refused as if it were theirs no more. A
    domain service that creates a record under an id a client chose asks first
    (selectors.synced_type_of) and refuses with an error of its own; one that did not is
    refused here, before anything of it is written: a 409 ``id_in_use`` naming the id, not a
    500. Inside a push, whose apply checks the id before (quarantined ``id_in_use``, or
    ``not_permitted`` for another program's record), it
    is a fault of the server's code: the mutation is kept for review as ``apply_failed``."""

    def __init__(self, detail: str) -> None:
        super().__init__(detail, code="id_in_use", field="id")


class Publisher:
    """Collects the sync-side writes of many record changes and writes them in bulk.

    ``publish`` computes a record's next version and its feed entries (an upsert to the
    audience that sees it, a removal to the audience of the scopes that lost it); ``flush``
    writes them all in one statement and nudges the scopes after commit. Pending rows are
    plain tuples, and a version's data is serialised once and sent once, as a numbered
    document its head, its version row and its feed entry refer to: PostgreSQL parses each
    document once, and no model instance is built per row.
    """

    def __init__(self) -> None:
        self.heads: dict[UUID, Head] = {}
        self.dirty_heads: dict[UUID, _PendingHead] = {}
        # The versions written, by record: a later change of the batch merges against them.
        self.pending_versions: dict[UUID, list[PendingVersion]] = {}
        # Stored data (JSON text) of the versions and re-announcements, numbered from 1.
        self.documents: list[str] = []
        # (program_id, audience, record_type, record_id, operation, document (0: none), version,
        # reason, origin)
        self.entries: list[tuple[UUID, str, str, UUID, str, int, int, str, UUID | None]] = []
        # Audiences of several scopes the entries and heads name: key → scopes.
        self.audiences: dict[str, list[str]] = {}
        self.conflicts: list[Conflict] = []
        self.nudged: set[str] = set()
        # Per record: each health value's sealed form, so the copies of a version (head,
        # version row, feed entries, the push's result) share one sealing.
        self.sealed: dict[UUID, dict[Any, str]] = {}
        # Heads last written by a transaction younger than this one (WrittenSinceTransactionBegan).
        self.written_after_us: set[UUID] = set()

    def read_heads(self, record_ids: Iterable[UUID]) -> None:
        """Read the heads of these records (those it does not hold yet). Each head's data is
        opened with its record's memo, so a version that keeps a value keeps its sealing."""
        wanted = {record_id for record_id in record_ids if record_id not in self.heads}
        if not wanted:
            return
        with bulk.server_cursor() as cursor:
            # Null while this transaction has written nothing: its id, taken at its first
            # write, will be younger than that of every writer it waited for.
            cursor.execute(
                "SELECT record_id, record_type, program_id, version, scopes, is_deleted, data::text,"
                " written_in_transaction > pg_current_xact_id_if_assigned()::text::bigint, written_in_transaction"
                " FROM sync_syncedrecord WHERE record_id = ANY(%b::uuid[])",
                [list(wanted)],
            )
            stored = cursor.fetchall()
        for record_id, record_type, program_id, version, scopes, is_deleted, data, written_after_us, written in stored:
            if written_after_us:
                self.written_after_us.add(record_id)
            memo = self.sealed.setdefault(record_id, {})
            opened = sealing.unseal_tree(json.loads(data), memo)
            self.heads[record_id] = Head(
                record_id, record_type, program_id, version, opened, scopes, is_deleted, written
            )

    def _document(self, stored: str) -> int:
        self.documents.append(stored)
        return len(self.documents)

    def stored_form(self, record_id: UUID, data: dict[str, Any]) -> str:
        """``data`` as stored: JSON text with its health fields sealed."""
        return jsontext.dumps(sealing.seal_tree(data, self.sealed.setdefault(record_id, {})))

    def publish(
        self,
        synced_type: registry.SyncedType,
        record: Any,
        *,
        user: User | None,
        device: Device | None,
        mutation_id: int | None = None,
        changed_fields: Sequence[str] | None = None,
        is_deleted: bool = False,
        echo_to_origin: bool = False,
        held_by_writer: bool = False,
    ) -> Head:
        """Record a new version of ``record`` (already saved by its domain service).

        Returns the head; an unchanged record keeps its version and writes nothing.
        With ``echo_to_origin`` the writing device gets its own change back (it merged
        into something the device does not have yet). ``held_by_writer``: the writing device
        holds the new version whole (``RecordVersion.held_by_writer``). Raises ``RecordIdHeld``
        when sync holds the id for a record of another type or program.
        """
        record_id: UUID = record.pk
        if record_id in self.written_after_us:
            raise WrittenSinceTransactionBegan()
        head = self.heads.get(record_id)
        program_id = synced_type.program_id_of(record)
        if head is not None and (head.record_type, head.program_id) != (synced_type.name, program_id):
            # The answer does not say whose record holds the id (another program's, maybe).
            logger.error(
                "Record %s is a %s of program %s: not published as a %s of program %s",
                record_id,
                head.record_type,
                head.program_id,
                synced_type.name,
                program_id,
            )
            raise RecordIdHeld("This id is in use by another record; use a new one.")
        data = synced_type.to_wire(record)
        scopes = sorted(set(synced_type.scopes_of(record)))
        if head is not None and head.data == data and head.scopes == scopes and head.is_deleted == is_deleted:
            return head
        visible_before = set() if head is None or head.is_deleted else set(head.scopes)
        visible_after = set() if is_deleted else set(scopes)
        version = (head.version if head is not None else 0) + 1
        new_head = Head(record_id, synced_type.name, program_id, version, data, scopes, is_deleted)
        document = self._document(self.stored_form(record_id, data))
        self.heads[record_id] = new_head
        self.dirty_heads[record_id] = _PendingHead(new_head, document)
        if changed_fields is None:
            # A create writes every field, the empty ones too: its writer's later edit of one
            # (with no base: the record had no server version) replaces its own value.
            previous = head.data if head is not None else {}
            changed_fields = [name for name in data if name not in previous or previous[name] != data[name]]
        pending = PendingVersion(
            record_id=record_id,
            record_type=synced_type.name,
            version=version,
            data=data,
            document=document,
            changed_fields=list(changed_fields),
            is_deleted=is_deleted,
            user_id=user.pk if user is not None else None,
            device_id=device.pk if device is not None else None,
            mutation_id=mutation_id,
            held_by_writer=held_by_writer,
        )
        self.pending_versions.setdefault(record_id, []).append(pending)
        origin = None if echo_to_origin or device is None else device.pk
        reason = RemoveReason.DELETED.value if is_deleted else RemoveReason.OUT_OF_SCOPE.value
        name = synced_type.name
        # Removal first: a reader of a lost scope and a kept one ends with the record.
        if visible_before - visible_after:
            lost = self._audience(visible_before - visible_after)
            self.entries.append((program_id, lost, name, record_id, _REMOVE, 0, version, reason, origin))
        if visible_after:
            seen_by = self._audience(visible_after)
            self.entries.append((program_id, seen_by, name, record_id, _UPSERT, document, version, "", origin))
        self.nudged |= visible_before | visible_after
        return new_head

    def _audience(self, scopes: Iterable[str]) -> str:
        scopes = sorted(scopes)
        key = audience_of(scopes)
        if len(scopes) > 1:
            self.audiences[key] = scopes
        return key

    def reannounce(self, head: Head, scope: str) -> None:
        """Send the record as it stands to one scope (no new version): a device whose change
        was kept as a conflict, or changed nothing of a record others had changed since its
        base, learns the server's state through its feed."""
        pending = self.dirty_heads.get(head.record_id)
        if head.is_deleted:
            document = 0
        elif pending is not None and pending.head is head:
            document = pending.document
        else:
            document = self._document(self.stored_form(head.record_id, head.data))
        self.entries.append(
            (
                head.program_id,
                scope,
                head.record_type,
                head.record_id,
                _REMOVE if head.is_deleted else _UPSERT,
                document,
                head.version,
                RemoveReason.DELETED.value if head.is_deleted else "",
                None,
            )
        )
        self.nudged.add(scope)

    def flush(self) -> None:
        if self.dirty_heads or self.pending_versions or self.entries:
            self._write_all()
        if self.conflicts:
            Conflict.objects.bulk_create(self.conflicts)
        if self.nudged:
            nudged = sorted(self.nudged)
            transaction.on_commit(lambda: nudges.nudge_soon(nudged))
        self.dirty_heads, self.pending_versions, self.entries, self.documents = {}, {}, [], []
        self.audiences, self.conflicts, self.nudged = {}, [], set()
        self.sealed = {}

    def _write_all(self) -> None:
        """Heads, versions, feed entries and new audiences in one statement. Each row names
        its data by document number."""
        heads = list(self.dirty_heads.values())
        head_audiences = [self._audience(pending.head.scopes) for pending in heads]
        versions = [version for by_record in self.pending_versions.values() for version in by_record]
        entries: list[Sequence[Any]] = list(zip(*self.entries, strict=True)) if self.entries else [[]] * 9
        with bulk.server_cursor() as cursor:
            cursor.execute(
                "WITH document AS ("
                "  SELECT d.data, d.n FROM unnest(%b::jsonb[]) WITH ORDINALITY AS d(data, n)"
                "), audience AS ("
                # An audience commits with the first entry or head that names it.
                "  INSERT INTO sync_audience (key, scopes)"
                "  SELECT a.key, string_to_array(a.scopes, %b)::varchar[] FROM unnest(%b::text[], %b::text[])"
                "  AS a(key, scopes) ON CONFLICT DO NOTHING"
                "), head AS ("
                "  INSERT INTO sync_syncedrecord"
                "  (record_id, record_type, program_id, version, data, scopes, audience, is_deleted, updated_at,"
                "  written_in_transaction)"
                "  SELECT h.record_id, h.record_type, h.program_id, h.version, document.data,"
                "  string_to_array(h.scopes, %b)::varchar[], h.audience, h.is_deleted, now(),"
                "  pg_current_xact_id()::text::bigint"
                "  FROM unnest(%b::uuid[], %b::text[], %b::uuid[], %b::int[], %b::bigint[], %b::text[], %b::text[],"
                "  %b::bool[])"
                "  AS h(record_id, record_type, program_id, version, document, scopes, audience, is_deleted)"
                "  JOIN document ON document.n = h.document"
                "  ON CONFLICT (record_id) DO UPDATE SET record_type = EXCLUDED.record_type,"
                "  program_id = EXCLUDED.program_id, version = EXCLUDED.version, data = EXCLUDED.data,"
                "  scopes = EXCLUDED.scopes, audience = EXCLUDED.audience, is_deleted = EXCLUDED.is_deleted,"
                "  updated_at = EXCLUDED.updated_at, written_in_transaction = EXCLUDED.written_in_transaction"
                "), version AS ("
                "  INSERT INTO sync_recordversion (record_id, record_type, version, data, changed_fields,"
                "  is_deleted, user_id, device_id, mutation_id, held_by_writer, created_at)"
                "  SELECT v.record_id, v.record_type, v.version, document.data,"
                "  string_to_array(v.changed, %b)::varchar[], v.is_deleted, v.user_id, v.device_id, v.mutation_id,"
                "  v.held_by_writer, now()"
                "  FROM unnest(%b::uuid[], %b::text[], %b::int[], %b::bigint[], %b::text[], %b::bool[], %b::uuid[],"
                "  %b::uuid[], %b::bigint[], %b::bool[])"
                "  AS v(record_id, record_type, version, document, changed, is_deleted, user_id, device_id,"
                "  mutation_id, held_by_writer)"
                "  JOIN document ON document.n = v.document"
                ")"
                # In the order published: the feed's sequence follows it.
                " INSERT INTO sync_changeentry (program_id, scope, record_type, record_id, operation, data,"
                " version, reason, origin_device_id, created_at)"
                " SELECT e.program_id, e.scope, e.record_type, e.record_id, e.operation,"
                " coalesce(document.data, '{}'::jsonb), e.version, e.reason, e.origin_device_id, now()"
                " FROM unnest(%b::uuid[], %b::text[], %b::text[], %b::uuid[], %b::text[], %b::bigint[], %b::int[],"
                " %b::text[], %b::uuid[]) WITH ORDINALITY"
                " AS e(program_id, scope, record_type, record_id, operation, document, version, reason,"
                " origin_device_id, n)"
                " LEFT JOIN document ON document.n = e.document"
                " ORDER BY e.n",
                [
                    self.documents,
                    _SEPARATOR,
                    list(self.audiences),
                    [_SEPARATOR.join(scopes) for scopes in self.audiences.values()],
                    _SEPARATOR,
                    [pending.head.record_id for pending in heads],
                    [pending.head.record_type for pending in heads],
                    [pending.head.program_id for pending in heads],
                    [pending.head.version for pending in heads],
                    [pending.document for pending in heads],
                    [_SEPARATOR.join(pending.head.scopes) for pending in heads],
                    head_audiences,
                    [pending.head.is_deleted for pending in heads],
                    _SEPARATOR,
                    [v.record_id for v in versions],
                    [v.record_type for v in versions],
                    [v.version for v in versions],
                    [v.document for v in versions],
                    [_SEPARATOR.join(v.changed_fields) for v in versions],
                    [v.is_deleted for v in versions],
                    [v.user_id for v in versions],
                    [v.device_id for v in versions],
                    [v.mutation_id for v in versions],
                    [v.held_by_writer for v in versions],
                    *[list(column) for column in entries],
                ],
            )


def publish_record(
    *,
    type_name: str,
    record: Any,
    user: User | None,
    device: Device | None = None,
    is_deleted: bool = False,
    echo_to_origin: bool = False,
) -> Head:
    """Publish a record a domain service has just saved: new version, feed entries, scopes.

    Call it inside the service's transaction, after ``lock_records`` and the write. The
    writing ``device``'s feed skips the change (its own write) unless ``echo_to_origin``.
    """
    synced_type = registry.get(type_name)
    if synced_type is None:
        raise LookupError(f"record type {type_name!r} is not registered for sync")
    assert connection.in_atomic_block, "publish_record needs the writing transaction"
    lock_records([record.pk])
    publisher = Publisher()
    publisher.read_heads([record.pk])
    head = publisher.publish(
        synced_type, record, user=user, device=device, is_deleted=is_deleted, echo_to_origin=echo_to_origin
    )
    publisher.flush()
    return head


# Scope changes of a user (P5): what their devices may no longer see, and what they now may.

_SCOPE_CHANGE_CHUNK = 2_000


def user_scopes_refresh(*, user: User, access_changed: bool = False) -> list[str]:
    """Bring the user's devices in line with what the user may see now.

    Records the user could see through a scope they lost (left a unit, lost a role) and
    cannot see through any other get a removal in the user's own scope; records of a scope
    they gained get an upsert there, so a device need not re-bootstrap. Called before every
    pull and by the services that change memberships; idempotent and cheap when nothing
    changed. Returns the user's scopes.
    """
    current = scopes_for_user(user)
    state = UserScopeState.objects.filter(user=user).first()
    if state is not None and sorted(state.scopes) == current:
        return current
    with transaction.atomic():
        # Stored first by a change of access (a new hire's first crew), what the user holds
        # beyond their own scope was gained by that change, and is read from it on, with its
        # catch-up, as any later join is: read whole, the feed from its start would serve them
        # what passed through the unit before they joined. Stored first by a pull, when
        # the user came to hold it is unknown.
        state, created = UserScopeState.objects.select_for_update().get_or_create(
            user=user, defaults={"scopes": [user_scope(user.pk)] if access_changed else current}
        )
        if created and not access_changed:
            return current
        # Read again under the lock: a change of crew that committed since the first read
        # stored its scopes already, and comparing them with the older read would undo it.
        current = scopes_for_user(user)
        if sorted(state.scopes) == current:
            return current
        lost = sorted(set(state.scopes) - set(current))
        gained = sorted(set(current) - set(state.scopes))
        kept = sorted(set(state.scopes) & set(current))
        target = user_scope(user.pk)
        _wait_for_older_writers()
        unseen_from, unseen = _transactions_not_yet_seen()
        if lost:
            # Records no scope the user keeps sees (each audience is all or nothing), and those
            # a younger writer (or this transaction) has moved out of a lost scope already: its
            # removal is addressed to that scope, which this user reads only up to this change.
            # One the user still sees comes back after this removal with that writer's upsert.
            moved_out = ChangeEntry.objects.filter(
                scope__in=audiences_of(including_any_of=lost),
                operation=ChangeOperation.REMOVE,
                transaction_id__gte=RawSQL("pg_current_xact_id()::text::bigint", []),
            ).values("record_id")
            # A record deleted before this change is not removed again: its tombstone, addressed
            # to the scope while the user held it, is in their feed already, and a removal of a
            # record the device never held (deleted before its first sync) is one WatermelonDB
            # makes a row of.
            lost_records = SyncedRecord.objects.filter(
                Q(audience__in=audiences_of(including_any_of=lost, excluding_any_of=current), is_deleted=False)
                | Q(record_id__in=moved_out)
            ).order_by("record_id")
            _append_for_user(lost_records, target, ChangeOperation.REMOVE)
            _append_feed_only_for_user(
                audiences_of(including_any_of=lost, excluding_any_of=current),
                target,
                ChangeOperation.REMOVE,
                unless_read_in=audiences_of(including_any_of=[scope for scope in current if scope != target]),
            )
        if gained:
            gained_records = SyncedRecord.objects.filter(
                audience__in=audiences_of(including_any_of=gained, excluding_any_of=kept), is_deleted=False
            ).order_by("record_id")
            _append_for_user(gained_records, target, ChangeOperation.UPSERT)
            _append_feed_only_for_user(
                audiences_of(including_any_of=gained, excluding_any_of=kept),
                target,
                ChangeOperation.UPSERT,
                seen=(unseen_from, unseen),
            )
        ScopeChange.objects.bulk_create(
            [ScopeChange(user=user, scope=scope, gained=False) for scope in lost]
            + [
                ScopeChange(user=user, scope=scope, gained=True, unseen_from=unseen_from, unseen=unseen)
                for scope in gained
            ]
        )
        state.scopes = current
        state.save(update_fields=["scopes", "updated_at"])
        transaction.on_commit(lambda: nudge_scopes([target]))
    return current


def _transactions_not_yet_seen() -> tuple[int, list[int]]:
    """The transactions this one's next statements may not see committed yet: from the next
    id to be assigned on, and those running now but this one. A change of access reads its
    catch-up after this, so it sees at least every other transaction."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT pg_snapshot_xmax(s)::text::bigint, ARRAY(SELECT x::text::bigint FROM pg_snapshot_xip(s) AS x"
            " WHERE x <> pg_current_xact_id()) FROM pg_current_snapshot() AS s"
        )
        unseen_from, running = cursor.fetchone()
    return int(unseen_from), sorted(int(x) for x in running)


# How long a change of access waits for the writers that were running when it began, and
# how often it looks whether they have ended.
_OLDER_WRITERS_WAIT_SECONDS = 5.0
_OLDER_WRITERS_POLL_SECONDS = 0.02


def _wait_for_older_writers() -> None:
    """Wait until every transaction that took its id before this one has ended.

    A change of access reads the records of the scopes it changes, for its catch-up, and a
    writer still running then is not in it. If that writer commits first, a device pulling
    before the change commits reads under the user's old scopes: it is served the writer's
    entries (a record moved into the unit the user leaves, which it then keeps), or its
    cursor moves past them (a record moved into the unit they join, which it never gets).
    After the wait, the catch-up sees what those writers wrote. Writers that took their id
    after this transaction need no wait: their entries come after the catch-up in the
    feed's order, and are served only once the change has committed, under the new scopes
    (one of them that moved a record out of a lost scope is read by the catch-up itself).

    Stops waiting, and logs it, when a writer waited for is itself waiting for a lock this
    transaction holds (neither would ever go on), or after ``_OLDER_WRITERS_WAIT_SECONDS``.
    """
    with connection.cursor() as cursor:
        # Running: those the snapshot lists, and those it counts as not begun because they
        # took their ids after the newest that had ended.
        cursor.execute(
            "WITH now AS (SELECT pg_current_snapshot() AS s, pg_current_xact_id()::text::bigint AS me)"
            " SELECT array(SELECT x::text::bigint FROM now, pg_snapshot_xip(now.s) AS x"
            " WHERE x::text::bigint < now.me"
            " UNION SELECT generate_series(pg_snapshot_xmax(now.s)::text::bigint, now.me - 1) FROM now)"
        )
        (running,) = cursor.fetchone()
        deadline = time.monotonic() + _OLDER_WRITERS_WAIT_SECONDS
        given_up = 0
        while running:
            # Those still running, and of them those waiting for a lock this transaction holds
            # (each transaction holds a lock on its own 32-bit id, which names its backend).
            cursor.execute(
                "WITH running AS (SELECT x FROM unnest(%s::bigint[]) AS x"
                " WHERE pg_xact_status(x::text::xid8) = 'in progress')"
                " SELECT array(SELECT x FROM running), array(SELECT x FROM running WHERE EXISTS ("
                " SELECT 1 FROM pg_locks AS l WHERE l.locktype = 'transactionid' AND l.granted"
                " AND l.transactionid::text::bigint = x %% 4294967296"
                " AND pg_backend_pid() = ANY(pg_blocking_pids(l.pid))))",
                [running],
            )
            running, waiting_for_this_one = cursor.fetchone()
            if waiting_for_this_one:
                given_up += len(waiting_for_this_one)
                running = [x for x in running if x not in set(waiting_for_this_one)]
            if running and time.monotonic() > deadline:
                given_up += len(running)
                running = []
            if running:
                time.sleep(_OLDER_WRITERS_POLL_SECONDS)
        if given_up:
            logger.warning(
                "A change of access went on without waiting for %d older writer(s) (waiting for a lock it "
                "holds, or still running after %s s): a record they write into the scopes it changes may be "
                "missing from its catch-up.",
                given_up,
                _OLDER_WRITERS_WAIT_SECONDS,
            )


def _append_for_user(records: Any, scope: str, operation: ChangeOperation) -> None:
    batch: list[ChangeEntry] = []
    for head in records.iterator(chunk_size=_SCOPE_CHANGE_CHUNK):
        batch.append(
            ChangeEntry(
                program_id=head.program_id,
                scope=scope,
                record_type=head.record_type,
                record_id=head.record_id,
                operation=operation,
                data=head.data if operation == ChangeOperation.UPSERT else {},
                version=head.version,
                reason=RemoveReason.OUT_OF_SCOPE if operation == ChangeOperation.REMOVE else "",
            )
        )
        if len(batch) >= _SCOPE_CHANGE_CHUNK:
            ChangeEntry.objects.bulk_create(batch)
            batch = []
    if batch:
        ChangeEntry.objects.bulk_create(batch)


def _append_feed_only_for_user(
    audiences: RawSQL,
    scope: str,
    operation: ChangeOperation,
    *,
    unless_read_in: RawSQL | None = None,
    seen: tuple[int, list[int]] | None = None,
) -> None:
    """``_append_for_user`` for the records only the feed holds (dispatch's calls and
    assignments: no head, no version): each whose last entry to these audiences, before this
    transaction (what the user could have read there), is an upsert, its data copied as
    stored. With ``unless_read_in``, not those whose last entry to one of those audiences is
    an upsert: the user still sees them there (a dispatcher who leaves a crew).

    With ``seen`` (a gain's ``unseen_from`` and ``unseen``), the last entry among all those a
    reader of the gained scope is not served: a younger writer's that committed before this
    read (an offer to the crew joined, or its cancellation) is one, and is the call's state."""
    before_params: list[Any] = []
    if seen is None:
        before = "e.transaction_id < pg_current_xact_id()::text::bigint"
    else:
        unseen_from, unseen = seen
        before = "e.transaction_id < %s AND NOT e.transaction_id = ANY(%s::bigint[])"
        before_params = [unseen_from, unseen]
    still_read, still_read_params = "", []
    if unless_read_in is not None:
        still_read = (
            " AND NOT EXISTS (SELECT 1 FROM (SELECT DISTINCT ON (kept.scope) kept.operation"  # noqa: S608 — the audiences' SQL is a constant
            " FROM sync_changeentry AS kept WHERE kept.record_id = candidate.record_id AND kept.version IS NULL"
            f" AND kept.scope IN ({unless_read_in.sql})"
            " ORDER BY kept.scope, kept.transaction_id DESC, kept.id DESC) AS last_kept"
            " WHERE last_kept.operation = %s)"
        )
        still_read_params = [*unless_read_in.params, ChangeOperation.UPSERT.value]
    with connection.cursor() as cursor:
        cursor.execute(
            "WITH candidate AS (SELECT DISTINCT e.record_id FROM sync_changeentry AS e"  # noqa: S608 — the audiences' SQL is a constant
            f" WHERE e.scope IN ({audiences.sql}) AND e.version IS NULL AND {before})"
            " INSERT INTO sync_changeentry"
            " (program_id, scope, record_type, record_id, operation, data, version, reason, created_at)"
            " SELECT latest.program_id, %s, latest.record_type, latest.record_id, %s,"
            " CASE WHEN %s THEN latest.data ELSE '{}'::jsonb END, NULL, %s, now()"
            " FROM candidate CROSS JOIN LATERAL (SELECT e.program_id, e.record_type, e.record_id, e.operation, e.data"
            " FROM sync_changeentry AS e WHERE e.record_id = candidate.record_id AND e.version IS NULL"
            f" AND e.scope IN ({audiences.sql}) AND {before}"
            " ORDER BY e.transaction_id DESC, e.id DESC LIMIT 1) AS latest"
            f" WHERE latest.operation = %s{still_read} ORDER BY latest.record_id",
            [
                *audiences.params,
                *before_params,
                scope,
                operation.value,
                operation == ChangeOperation.UPSERT,
                RemoveReason.OUT_OF_SCOPE.value if operation == ChangeOperation.REMOVE else "",
                *audiences.params,
                *before_params,
                ChangeOperation.UPSERT.value,
                *still_read_params,
            ],
        )


# Retention.


def feed_prune(*, older_than: timedelta, batch_size: int = 10_000) -> int:
    """Delete feed entries older than the retention; cursors from before then get 410.

    Entries are pruned by whole transactions, so a cursor is either fully served or expired.
    Returns how many entries were deleted.
    """
    cutoff = timezone.now() - older_than
    # WatermelonDB's numbered cursors, one per pull: one from before the retention gets the
    # 410 a cursor of its age would get (watermelon.UnknownTimestamp).
    IssuedCursor.objects.filter(created_at__lt=cutoff).delete()
    last_transaction = ChangeEntry.objects.filter(created_at__lt=cutoff).aggregate(last=Max("transaction_id"))["last"]
    if last_transaction is None:
        return 0
    with transaction.atomic():
        retention, _ = FeedRetention.objects.select_for_update().get_or_create(pk=1)
        retention.pruned_below_transaction_id = max(retention.pruned_below_transaction_id, last_transaction + 1)
        retention.pruned_at = timezone.now()
        retention.save()
        # A cursor that could still need them reads only changes after its position.
        ScopeChange.objects.filter(transaction_id__lte=last_transaction).delete()
    deleted = 0
    while True:
        ids = list(
            ChangeEntry.objects.filter(transaction_id__lte=last_transaction).values_list("id", flat=True)[:batch_size]
        )
        if not ids:
            return deleted
        deleted += ChangeEntry.objects.filter(id__in=ids).delete()[0]


# Conflicts: a case manager chooses which of the two kept values stands (DESIGN.md P3).


class ConflictChoice(models.TextChoices):
    SERVER = "server", "Keep the server's value"
    DEVICE = "device", "Take the device's value"


_CONFLICT_RESOLVERS = frozenset({Role.CASE_MANAGER, Role.SUPERVISOR, Role.ADMINISTRATOR})


@transaction.atomic
def conflict_resolve(*, conflict: Conflict, choice: str, resolved_by: User, accessor: Accessor) -> Conflict:
    """Resolve a conflict by choosing a side, recording who and when.

    Choosing the device's value writes it through the record type's own ``apply``, or its
    ``take_device_value`` where it has one (so the domain's rules hold: a note's text is its
    author's, and a note signed since takes the device's text as an addendum, never over its
    own), and the publish path (a new version in the feed for every device that sees the
    record). Choosing the server's value changes nothing: the record already holds it. The
    conflict returned says what the resolution wrote (``written``).

    The resolution is audited as the accessor's write, in its transaction (P8): the conflict's
    record (its copies in the conflict are read and settled, whichever side is kept) and every
    other record written, each once. A type's own way of writing may audit what it wrote
    itself (a move of an encounter, with everything under it: ``WriteContext.audited``).
    """
    if choice not in ConflictChoice.values:
        raise DomainError("Choose server or device.", code="invalid", field="choice", status_code=400)
    may_resolve = (
        resolved_by.is_superuser
        or resolved_by.memberships.filter(program_id=conflict.program_id, role__in=_CONFLICT_RESOLVERS).exists()
    )
    if not may_resolve:
        raise DomainError("No such conflict.", code="not_found", status_code=404)
    # The record's lock serialises the resolutions of its conflicts. Read, not locked: a row
    # lock is a write, and a writer's first write dates its changes in the feed, which must
    # come after every record lock it waits for (an encounter taken back moves its notes).
    lock_records([conflict.record_id])
    conflict = Conflict.objects.get(pk=conflict.pk)
    if not conflict.is_open:
        raise DomainError("The conflict is already resolved.", code="conflict_resolved", field="choice")
    written: list[tuple[str, UUID, str]] = []
    context = registry.WriteContext(user=resolved_by, device=None, accessor=accessor)
    if choice == ConflictChoice.DEVICE:
        written = _apply_device_value(conflict, context)
    _audit_resolution(conflict, written, accessor=accessor, audited=context.audited)
    conflict.written = tuple(written)
    conflict.resolved_at = timezone.now()
    conflict.resolved_by = resolved_by
    conflict.resolution = ConflictChoice(choice).label
    conflict.save(update_fields=["resolved_at", "resolved_by", "resolution"])
    return conflict


def _audit_resolution(
    conflict: Conflict, written: list[tuple[str, UUID, str]], *, accessor: Accessor, audited: set[UUID]
) -> None:
    operations = {record_id: operation for _type, record_id, operation in written}
    records = [(conflict.record_type, conflict.record_id, operations.get(conflict.record_id, "update"))]
    records += [record for record in written if record[1] != conflict.record_id]
    for record_type, record_id, operation in records:
        if record_id not in audited:
            record_access(
                accessor=accessor,
                action=AccessAction(operation),
                record_type=record_type,
                record_ids=[record_id],
                program_id=conflict.program_id,
            )


def _apply_device_value(conflict: Conflict, context: registry.WriteContext) -> list[tuple[str, UUID, str]]:
    if conflict.kind == ConflictKind.EDIT_VS_DELETE:
        raise DomainError(
            "The record was deleted before this edit reached the server, and its deletion stands: the device's "
            "values stay in this conflict. Keep the server's value.",
            code="unsupported_resolution",
            field="choice",
        )
    synced_type = registry.get(conflict.record_type)
    if synced_type is None:
        raise LookupError(f"record type {conflict.record_type!r} is not registered for sync")
    # The record as it stands (its lock is held): the choice was made between the two values
    # the conflict kept, and taking the device's must not overwrite what came after them.
    head = SyncedRecord.objects.get(record_id=conflict.record_id)
    if head.is_deleted:
        raise DomainError(
            "The record has been deleted since this conflict; its deletion stands. Keep the server's value.",
            code="record_deleted",
            field="choice",
        )
    if conflict.kind == ConflictKind.DELETE_VS_EDIT:
        # The device's delete, against the record as the conflict showed it: an edit written
        # since was never weighed against the delete, which would remove it unseen.
        if head.version != conflict.server_version:
            raise DomainError(
                f"The record has changed since this conflict (it is at version {head.version} now): deleting it "
                "would remove what you have not compared with the delete. Keep the server's value, then delete "
                "the record if it still should go.",
                code="conflict_stale",
                field="choice",
            )
        operation, values = "delete", {}
    else:
        if head.data.get(conflict.field) != conflict.server_value:
            raise DomainError(
                f"The record's {conflict.field} has changed since this conflict (it is at version {head.version} "
                "now): the device's value would overwrite a value you have not compared it with. Keep the server's "
                "value, then edit the record if the device's is still right.",
                code="conflict_stale",
                field="choice",
            )
        serializer = registry.bound_serializer(synced_type.serializer, partial=True)
        try:
            values = dict(serializer.run_validation({conflict.field: conflict.device_value}))
        except ValidationError as error:
            raise DomainError("The device's value is no longer valid.", code="invalid", field="choice") from error
        operation = "update"
    record = synced_type.model._default_manager.get(pk=conflict.record_id)
    if not synced_type.may_write(context, record, values):
        raise DomainError("You may not change this record.", code="forbidden", field="choice", status_code=403)
    change = registry.Change(operation, record.pk, record, values)
    try:
        if synced_type.take_device_value is not None:
            # The type's own way (a note's: its author's text, or an addendum to it once signed).
            return synced_type.take_device_value(context, change, conflict.user)
        saved = synced_type.apply(context, change)
    except registry.Refused as refused:
        raise DomainError(refused.detail, code=refused.code, field="choice") from refused
    context.flush_inserts()
    publish_record(type_name=synced_type.name, record=saved, user=context.user, is_deleted=operation == "delete")
    return [(synced_type.name, saved.pk, operation)]


def user_scopes_refresh_by_id(user_id: UUID) -> None:
    """user_scopes_refresh for a user known by id (the access-change listener)."""
    user_scopes_refresh(user=User.objects.get(pk=user_id), access_changed=True)


# Key rotation: the stored copies of records sealed again with the newest key.

_RESEAL_CHUNK = 2_000
# (table, key column, key type, JSON columns, sealed whole or by health field)
_SEALED_COLUMNS: list[tuple[str, str, str, tuple[str, ...], bool]] = [
    ("sync_syncedrecord", "record_id", "uuid", ("data",), False),
    ("sync_recordversion", "id", "bigint", ("data",), False),
    ("sync_changeentry", "id", "bigint", ("data",), False),
    ("sync_mutation", "id", "bigint", ("payload", "result"), False),
    ("sync_conflict", "id", "uuid", ("base_value", "server_value", "device_value"), True),
]


def reseal_stored_copies(*, chunk_size: int = _RESEAL_CHUNK) -> int:
    """Seal every health value in sync's stored copies with the newest key in
    FIELD_ENCRYPTION_KEYS (and seal any still plain). Returns how many rows changed.

    Run after putting a new key in front; the old key can go once this has finished.
    Rows are read and rewritten in chunks, each locked in its own transaction, so pushes
    and pulls go on meanwhile. Idempotent: a second run changes nothing but what was
    written with an older key in between.
    """
    changed = 0
    for table, key, key_type, columns, whole in _SEALED_COLUMNS:
        after: Any = None
        while True:
            with transaction.atomic(), bulk.server_cursor() as cursor:
                select = ", ".join(f"{column}::text" for column in columns)
                where = f"WHERE {key} > %s " if after is not None else ""
                cursor.execute(
                    f"SELECT {key}, {select} FROM {table} {where}ORDER BY {key} LIMIT %s FOR UPDATE",  # noqa: S608 — names are constants above
                    [after, chunk_size] if after is not None else [chunk_size],
                )
                rows = cursor.fetchall()
                if not rows:
                    break
                after = rows[-1][0]
                updates: list[list[Any]] = []
                for row in rows:
                    values, row_changed = [], False
                    for text in row[1:]:
                        fresh, column_changed = _reseal_column(text, whole=whole)
                        values.append(fresh)
                        row_changed = row_changed or column_changed
                    if row_changed:
                        updates.append([row[0], *values])
                if updates:
                    assignments = ", ".join(f"{column} = r.{column}" for column in columns)
                    casts = ", ".join("%b::jsonb[]" for _column in columns)
                    cursor.execute(
                        f"UPDATE {table} AS t SET {assignments} FROM unnest(%b::{key_type}[], {casts})"  # noqa: S608
                        f" AS r({key}, {', '.join(columns)}) WHERE t.{key} = r.{key}",
                        [list(column) for column in zip(*updates, strict=True)],
                    )
                    changed += len(updates)
    return changed


def _reseal_column(text: str | None, *, whole: bool) -> tuple[str | None, bool]:
    if text is None:
        return None, False
    value = json.loads(text)
    if not whole:
        fresh, changed = sealing.reseal_tree(value)
        return json.dumps(fresh), changed
    sealed = sealing.reseal_value(value)
    return json.dumps(sealed), sealed != value
