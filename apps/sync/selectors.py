"""Reads of the sync mechanism: complete, ordered feed pages from a cursor; the bootstrap
snapshot; a device's place in the push ledger; quarantined mutations and open conflicts
for the people who must see them."""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Generic, TypeVar
from uuid import UUID

from django.core.exceptions import ValidationError
from django.db import connection, transaction
from django.db.models import Exists, Max, Model, OuterRef, Q, QuerySet
from django.db.models.expressions import RawSQL

from apps.accounts.models import Membership, Role, User
from apps.common import bulk
from apps.sync import sealing
from apps.sync.models import (
    Audience,
    ChangeEntry,
    ChangeOperation,
    Conflict,
    ConflictKind,
    DismissCode,
    FeedRetention,
    Mutation,
    MutationStatus,
    RecordVersion,
    SyncedRecord,
    UserScopeState,
)
from apps.sync.scopes import scopes_for_user, user_scope


class InvalidCursor(ValueError):
    pass


class CursorExpired(InvalidCursor):
    """The cursor is older than the feed's retention: the device must re-bootstrap."""


class CursorAhead(CursorExpired):
    """The cursor names a transaction this database has not reached: it was issued by a
    database since restored from a backup, or replaced. Continuing from it would skip every
    change until the transaction ids catch up, so the device re-bootstraps like from an
    expired one."""


@dataclass(frozen=True, order=True)
class FeedPosition:
    transaction_id: int
    entry_id: int

    def encode(self, device_id: UUID | None = None) -> str:
        """The cursor of this position. Served to a device, it names the device, which alone
        continues from it: another device's scopes differ, and everything it may see from
        before the position would be skipped (a tablet signed in again, say)."""
        text = f"{self.transaction_id}.{self.entry_id}"
        if device_id is not None:
            text += f".{_device_tag(device_id)}"
        return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")

    @classmethod
    def decode(cls, cursor: str | None, *, reader_device_id: UUID | None = None) -> FeedPosition:
        """The position of a cursor; refused when it names a device other than the reader.
        Cursors issued before they named their device continue anywhere."""
        if not cursor:
            return cls(0, 0)
        try:
            raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
            parts = raw.split(".")
            if (
                len(parts) not in (2, 3)
                or not all(is_counter_text(part) for part in parts[:2])
                or (len(parts) == 3 and not _DEVICE_TAG.fullmatch(parts[2]))
            ):
                raise ValueError(raw)
        except (binascii.Error, UnicodeDecodeError, ValueError) as error:
            raise InvalidCursor("Not a cursor this server issued.") from error
        if len(parts) == 3:
            _check_issued_to(parts[2], reader_device_id, "bootstrap from the snapshot (keep the outbox)")
        return cls(int(parts[0]), int(parts[1]))

    @classmethod
    def of(cls, entry: ChangeEntry) -> FeedPosition:
        return cls(entry.transaction_id, entry.id)

    def is_past(self, transaction_id: int) -> bool:
        """Whether every entry this transaction wrote is behind the position: served to a
        reader that reached it, if addressed to them."""
        return transaction_id < self.transaction_id or (
            transaction_id == self.transaction_id and self.entry_id == _FEED_END
        )


_COUNTER_MAX = (1 << 63) - 1  # transaction ids and entry ids are 64-bit
# A cursor names its device by the first 48 bits of the id: enough to tell a tablet's
# devices apart, and a dozen characters a cursor (each feed entry carries one) can spare.
_DEVICE_TAG = re.compile(r"[0-9a-f]{12}")


def _device_tag(device_id: UUID) -> str:
    return device_id.hex[:12]


def _check_issued_to(tag: str, reader_device_id: UUID | None, then: str) -> None:
    """Refuse a cursor whose device tag is not the reader's: another device's scopes differ,
    and continuing from its place would skip what this one may see (a tablet signed in
    again, resuming the last sign-in's sync)."""
    if reader_device_id is not None and tag != _device_tag(reader_device_id):
        raise InvalidCursor(f"This cursor was issued to another device; {then}.")


def is_counter(value: Any) -> bool:
    """A transaction id, entry id or other 64-bit counter this server hands out, as JSON gives it."""
    return type(value) is int and 0 <= value <= _COUNTER_MAX


def is_counter_text(text: str) -> bool:
    """The same, as text: ASCII digits only (no sign, space, underscore or other script)."""
    return text.isascii() and text.isdigit() and len(text) <= 19 and int(text) <= _COUNTER_MAX


@dataclass(frozen=True)
class FeedPage:
    entries: list[ChangeEntry]
    position: FeedPosition
    # Whether the page moved past entries: some may be the reader's own, not given.
    passed_entries: bool
    has_more: bool
    # Changes already committed but not yet servable, because an older transaction is still
    # running: pull again shortly.
    held_back: bool
    # The scopes the page was read for.
    scopes: list[str]


def audiences_of(*, including_any_of: list[str], excluding_any_of: list[str] | None = None) -> RawSQL:
    """The audiences that include one of these scopes and none of the excluded ones: the
    scopes themselves, and every registered audience of several scopes.

    A subquery, so the audiences are read in the snapshot of the statement that uses them:
    an audience commits no later than the first entry addressed to it.
    """
    return RawSQL(_AUDIENCES_SQL, _audiences_params(including_any_of, excluding_any_of or []))  # noqa: S611 — a constant


_AUDIENCES_SQL = (
    "SELECT scope FROM unnest(%s::varchar[]) AS scope WHERE NOT scope = ANY(%s::varchar[])"
    " UNION ALL SELECT key FROM sync_audience WHERE scopes && %s::varchar[] AND NOT scopes && %s::varchar[]"
)


def _audiences_params(including: list[str], excluded: list[str]) -> list[Any]:
    return [including, excluded, including, excluded]


def _after(position: FeedPosition) -> Q:
    return Q(transaction_id__gt=position.transaction_id) | Q(
        transaction_id=position.transaction_id, id__gt=position.entry_id
    )


@dataclass(frozen=True)
class _Reading:
    """What a reader reads of the feed, fixed in one snapshot (see ``_reading_position``)."""

    # The oldest running transaction: entries below it are all committed.
    horizon: int
    next_transaction_id: int
    scopes: list[str]
    # Audiences read whole, and those read only while the user held a scope of them.
    audiences: list[str]
    windows: list[tuple[list[str], _Gain | None, int | None]]

    def readable(self) -> Q:
        readable = Q(scope__in=self.audiences)
        for audiences, gain, lost_at in self.windows:
            window = Q(scope__in=audiences)
            if gain is not None:
                window &= gain.after()
            if lost_at is not None:
                window &= Q(transaction_id__lt=lost_at)
            readable |= window
        for _audiences, gain, _lost_at in self.windows:
            superseded = gain.superseded_removals() if gain is not None else None
            if superseded is not None:
                readable &= ~superseded
        return readable


@dataclass(frozen=True)
class _Gain:
    """Where a user gained a scope: its entries are read from the transactions the gain's
    catch-up did not see (``ScopeChange.unseen_from``, ``unseen``) on."""

    transaction_id: int
    unseen_from: int | None
    unseen: list[int]
    # The user's own scope, where the gain's catch-up is.
    caught_up_in: str

    def after(self) -> Q:
        if self.unseen_from is None:  # recorded before the catch-up's snapshot was kept
            return Q(transaction_id__gt=self.transaction_id)
        return Q(transaction_id__gte=self.unseen_from) | Q(transaction_id__in=self.unseen)

    def superseded_removals(self) -> Q | None:
        """Removals the catch-up outdates: those of a younger writer it saw, of a record it
        serves. Such a writer moved the record out of a scope the user keeps into the one
        gained, so the user sees it throughout; its removal comes after the catch-up in the
        feed's order, and served it would be the last word the device has of the record
        (the writer's upsert into the gained scope is not served: the catch-up saw it)."""
        if self.unseen_from is None:  # its catch-up saw only what came before it
            return None
        seen_by_catch_up = Q(transaction_id__gt=self.transaction_id, transaction_id__lt=self.unseen_from)
        if self.unseen:
            seen_by_catch_up &= ~Q(transaction_id__in=self.unseen)
        served_by_catch_up = ChangeEntry.objects.filter(
            scope=self.caught_up_in,
            transaction_id=self.transaction_id,
            operation=ChangeOperation.UPSERT,
            record_id=OuterRef("record_id"),
        )
        return Q(operation=ChangeOperation.REMOVE) & seen_by_catch_up & Q(Exists(served_by_catch_up))


def _reading_position(scopes: list[str], user_id: UUID | None, position: FeedPosition) -> _Reading:
    """The oldest running transaction, the next transaction id to be assigned, the scopes
    read and the audiences a reader of them reads, in one snapshot.

    Every entry of a transaction below that one committed before the snapshot, and with it
    (or before it) every audience the entry names: read together, the audiences are
    complete for every entry that may be served. Given as values, the planner sees which
    audiences and walks the (scope, transaction) index for each.

    A user's scopes are read in that snapshot too, from where every change of their access
    stores them in its own transaction (``UserScopeState``): a reader that has not heard of
    a move to another unit (a socket whose message was lost) reads as the move left things,
    with its catch-up entries (which wait for older writers of the units: see
    ``services._wait_for_older_writers``). ``scopes`` stand in for a user whose scopes were
    never stored. So are the changes of their scopes after the position (``ScopeChange``):
    a scope gained or lost since is read only while the user held it. A gain at or before
    the position still bounds its scope while the position is below the transactions its
    catch-up saw (``unseen_from``): a page can end inside the catch-up, or before a younger
    writer it saw, and read whole the scope would serve that writer's entries, a record that
    passed through the unit before the join among them. Each scope's later changes come
    with it, so the reading follows it from that gain on.
    """
    with connection.cursor() as cursor:
        cursor.execute(
            "WITH reader AS (SELECT coalesce((SELECT scopes FROM sync_userscopestate WHERE user_id = %s),"
            " %s::varchar[]) AS scopes)"
            " SELECT pg_snapshot_xmin(pg_current_snapshot())::text::bigint,"
            " pg_snapshot_xmax(pg_current_snapshot())::text::bigint, reader.scopes,"
            " ARRAY(SELECT unnest(reader.scopes) UNION ALL SELECT key FROM sync_audience"
            " WHERE sync_audience.scopes && reader.scopes),"
            " (SELECT json_agg(json_build_array(scope, gained, transaction_id, unseen_from, unseen)"
            " ORDER BY transaction_id, id)"
            " FROM (SELECT *, bool_or(transaction_id > %s OR (gained AND unseen_from > %s))"
            " OVER (PARTITION BY scope ORDER BY transaction_id, id) AS still_bounds"
            " FROM sync_scopechange WHERE user_id = %s) AS change WHERE still_bounds)"
            " FROM reader",
            [user_id, scopes, position.transaction_id, position.transaction_id, user_id],
        )
        horizon, next_transaction_id, read_scopes, audiences, changes = cursor.fetchone()
    reading = _Reading(int(horizon), int(next_transaction_id), sorted(read_scopes), list(audiences), [])
    if not changes or user_id is None:
        return reading
    return _with_windows(reading, changes, user_scope(user_id))


def _with_windows(reading: _Reading, changes: list[list[Any]], caught_up_in: str) -> _Reading:
    """The reading of a user whose scopes changed after the position: each changed scope
    read between its changes, every other scope whole."""
    steps: dict[str, list[tuple[bool, int, _Gain | None]]] = {}
    for scope, gained, transaction_id, unseen_from, unseen in changes:
        gain = _Gain(transaction_id, unseen_from, unseen or [], caught_up_in) if gained else None
        steps.setdefault(scope, []).append((gained, transaction_id, gain))
    spans: list[tuple[str, _Gain | None, int | None]] = []
    for scope, changes_of_scope in steps.items():
        # Held at the position if its first change since is a loss.
        held, since = not changes_of_scope[0][0], None
        for gained, transaction_id, gain in changes_of_scope:
            if gained:
                held, since = True, gain
            elif held:
                spans.append((scope, since, transaction_id))
                held = False
        if held:
            spans.append((scope, since, None))
    whole = set(reading.scopes) - set(steps)
    # Read after the snapshot: they include every audience it held, and later ones are not
    # served (their entries are beyond the horizon).
    registered = list(Audience.objects.filter(scopes__overlap=[*whole, *steps]).values_list("key", "scopes"))
    audiences = sorted(whole) + [key for key, scopes in registered if not whole.isdisjoint(scopes)]
    read_whole = set(audiences)
    windows = [
        ([scope, *(key for key, scopes in registered if scope in scopes and key not in read_whole)], after, before)
        for scope, after, before in spans
    ]
    return _Reading(reading.horizon, reading.next_transaction_id, reading.scopes, audiences, windows)


def feed_page(
    *,
    scopes: list[str],
    cursor: str | None,
    limit: int = 200,
    reader_device_id: UUID | None = None,
    user_id: UUID | None = None,
) -> FeedPage:
    """The next entries for these scopes after the cursor, in feed order.

    With ``user_id``, the scopes are the user's as stored, read with the entries (see
    ``_reading_position``); the page names the scopes it was read for.
    A device's own writes are skipped (it has them already); the cursor still moves past them.
    """
    position = FeedPosition.decode(cursor, reader_device_id=reader_device_id)
    _check_retention(position)
    reading = _reading_position(scopes, user_id, position)
    _check_not_ahead(position, next_transaction_id=reading.next_transaction_id)
    readable = ChangeEntry.objects.filter(reading.readable())
    servable = readable.filter(transaction_id__lt=reading.horizon)
    rows = list(servable.filter(_after(position)).order_by("transaction_id", "id")[: limit + 1])
    # Again once read: the pruning commits its bound before it deletes, so a cursor it expired
    # meanwhile is refused here rather than served the entries left after a gap.
    _check_retention(position)
    has_more = len(rows) > limit
    rows = rows[:limit]
    if rows:
        position = FeedPosition.of(rows[-1])
    if not has_more and (position.transaction_id, position.entry_id) < (reading.horizon - 1, _FEED_END):
        # Every transaction below the horizon has ended and this page holds all their entries
        # for this reader: the cursor moves up to it, so the cursor of a device whose scopes
        # are quiet stays within the retention however old their last change, and says that
        # the reader has every entry of the transaction it stopped in (FeedPosition.is_past).
        position = FeedPosition(reading.horizon - 1, _FEED_END)
    entries = [row for row in rows if reader_device_id is None or row.origin_device_id != reader_device_id]
    if user_id is not None:
        entries = _without_records_out_of_sight(entries, user_scope(user_id), reading.scopes)
    held_back = not has_more and readable.filter(transaction_id__gte=reading.horizon).exists()
    return FeedPage(
        entries=entries,
        position=position,
        passed_entries=bool(rows),
        has_more=has_more,
        held_back=held_back,
        scopes=reading.scopes,
    )


def _without_records_out_of_sight(entries: list[ChangeEntry], own_scope: str, scopes: list[str]) -> list[ChangeEntry]:
    """The entries but the upserts addressed to the reader alone of records its ``scopes`` no
    longer see.

    A writer that began before a change of the reader's access committed (a push whose check
    of the writer's rights still read the old crew) may send the writer the record as it
    stands after that change's removal of it, in the feed's order: served, it would bring the
    record back to a device whose user may no longer see it, and leave it there for good.
    Read now, a record's audience is where it is now: one it moved to later has its own
    entries, in the feed after these.
    """
    addressed = [entry for entry in entries if entry.scope == own_scope and entry.operation == ChangeOperation.UPSERT]
    if not addressed:
        return entries
    out_of_sight = set(
        SyncedRecord.objects.filter(record_id__in={entry.record_id for entry in addressed})
        .exclude(audience__in=audiences_of(including_any_of=scopes))
        .values_list("record_id", flat=True)
    )
    dropped = {entry.pk for entry in addressed if entry.record_id in out_of_sight}
    return [entry for entry in entries if entry.pk not in dropped]


def _check_not_ahead(position: FeedPosition, *, next_transaction_id: int | None = None) -> None:
    """Refuse a position the database has not reached: issued by a database since restored
    from a backup, or replaced, it would skip every change until transaction ids caught up."""
    if next_transaction_id is None:
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_snapshot_xmax(pg_current_snapshot())::text::bigint")
            (next_transaction_id,) = cursor.fetchone()
    # Every position served is below the oldest running transaction, so below this (read on
    # the primary, as the horizon is: a lagging replica would refuse a served cursor).
    if position.transaction_id >= next_transaction_id:
        raise CursorAhead(
            "This cursor is ahead of the feed (the server's database was restored or replaced); "
            "bootstrap again from the snapshot (keep the outbox: push it after the snapshot)."
        )


def _check_retention(position: FeedPosition) -> None:
    pruned_below = FeedRetention.objects.filter(pk=1).values_list("pruned_below_transaction_id", flat=True).first()
    if pruned_below and position.transaction_id < pruned_below:
        raise CursorExpired(
            "This cursor is older than the feed's retention; bootstrap again from the snapshot "
            "(keep the outbox: push it after the snapshot)."
        )


def entry_as_message(entry: ChangeEntry, reader_device_id: UUID) -> dict[str, Any]:
    """The wire form of an entry served to this device, the same over HTTP and the websocket."""
    message: dict[str, Any] = {
        "cursor": FeedPosition.of(entry).encode(reader_device_id),
        "type": entry.record_type,
        "id": str(entry.record_id),
        "op": entry.operation,
        "data": entry.data,
        "changed_at": entry.created_at.isoformat(),
        "version": entry.version,
    }
    if entry.reason:
        message["reason"] = entry.reason
    return message


# The bootstrap snapshot: every live record in the reader's scopes, straight from the
# record heads, in pages of keyset order, ending with the feed cursor to continue from.

_FEED_END = (1 << 63) - 1


@dataclass(frozen=True)
class SnapshotPosition:
    feed: FeedPosition
    audience: str
    after: UUID | None
    # The tag of the device the snapshot is for ("" in cursors from before): its pages follow
    # that device's user's audiences, and another device would end "complete" without its own.
    device_tag: str

    def encode(self) -> str:
        raw = json.dumps(
            [
                self.feed.transaction_id,
                self.feed.entry_id,
                self.audience,
                str(self.after or ""),
                self.device_tag,
            ]
        )
        return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")

    @classmethod
    def decode(cls, cursor: str) -> SnapshotPosition:
        try:
            raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
            transaction_id, entry_id, audience, after, *device = json.loads(raw)
            # Exactly the types it was made of: a tampered value must not reach the query.
            # Cursors issued before they named their device have none.
            if not (
                is_counter(transaction_id)
                and is_counter(entry_id)
                and type(audience) is str
                and audience.isascii()
                and "\x00" not in audience
                and type(after) is str
                and (device == [] or (len(device) == 1 and type(device[0]) is str and _DEVICE_TAG.fullmatch(device[0])))
            ):
                raise ValueError(raw)
            return cls(
                FeedPosition(transaction_id, entry_id), audience, UUID(after) if after else None, "".join(device)
            )
        except (binascii.Error, UnicodeDecodeError, ValueError, TypeError) as error:
            raise InvalidCursor("Not a snapshot cursor this server issued.") from error


@dataclass(frozen=True)
class SnapshotPage:
    # (record_type, record_id, version, data as JSON text): passed through, never parsed.
    rows: list[tuple[str, UUID, int, str]]
    cursor: str | None  # None when this is the last page
    feed_cursor: str | None  # set on the last page: pull the feed from here


def snapshot_start(user_id: UUID | None = None) -> tuple[FeedPosition, list[str] | None]:
    """Where the feed must continue after a snapshot begun now, and the user's scopes there.

    Taken before the first page is read: every transaction that has not committed yet has
    an id at or above the oldest running one, so its changes are in the feed after this
    position; everything committed before is in the record heads the snapshot reads. The
    scopes are read in the same database snapshot (None if never stored): a change of crew
    that commits before the position has its catch-up before it too, so the first page must
    be read for the scopes it left, not for those the request began with.
    """
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT pg_snapshot_xmin(pg_current_snapshot())::text::bigint,"
            " (SELECT scopes FROM sync_userscopestate WHERE user_id = %s)",
            [user_id],
        )
        oldest_running, scopes = cursor.fetchone()
    return FeedPosition(max(int(oldest_running) - 1, 0), _FEED_END), scopes


_SNAPSHOT_SQL = """
SELECT record_type, record_id, version, data::text
FROM sync_syncedrecord
WHERE audience = %s AND record_id > %s AND NOT is_deleted
ORDER BY record_id
LIMIT %s
"""
# An audience's first page: from its lowest id, the nil UUID included (a valid record id).
_SNAPSHOT_FROM_START_SQL = _SNAPSHOT_SQL.replace("record_id > %s", "record_id >= %s")
_LOWEST_UUID = UUID(int=0)
# Of some types only (a type is not indexed: the audience's records are read past the others).
_OF_TYPES = "AND record_type = ANY(%s::varchar[]) AND NOT is_deleted"
_SNAPSHOT_OF_TYPES_SQL = _SNAPSHOT_SQL.replace("AND NOT is_deleted", _OF_TYPES)
_SNAPSHOT_OF_TYPES_FROM_START_SQL = _SNAPSHOT_FROM_START_SQL.replace("AND NOT is_deleted", _OF_TYPES)


def snapshot_page(
    *,
    scopes: list[str],
    cursor: str | None,
    reader_device_id: UUID,
    limit: int = 1000,
    user_id: UUID | None = None,
    record_types: list[str] | None = None,
) -> SnapshotPage:
    """The next page of the snapshot of everything these scopes see, for this device.

    The reader's audiences are walked one at a time in key order, each record once (a
    record has one audience). Resumable: send the cursor back for the next page. An
    audience first used after the snapshot began holds only records changed since, which
    the feed from ``feed_cursor`` brings. With ``user_id``, each page is read for the
    user's scopes as stored in the database snapshot the page is read in (the first page's
    is where the snapshot begins, ``snapshot_start``); a later change of them is the feed's
    to bring, as any change after the snapshot began. With ``record_types``, only records of
    those types (a WatermelonDB app's tables added by its schema migration).
    """
    tag = _device_tag(reader_device_id)
    position = None
    if cursor:
        position = SnapshotPosition.decode(cursor)
        if position.device_tag:
            _check_issued_to(position.device_tag, reader_device_id, "start the snapshot again, without a cursor")
        # Its pages would end in a feed cursor the retention has expired, or one from before a
        # restore of the database: the device would page through every record only to be
        # sent back to the start by the feed.
        _check_retention(position.feed)
        _check_not_ahead(position.feed)
    with _one_database_snapshot():
        if position is None:
            start, stored_scopes = snapshot_start(user_id)
            position = SnapshotPosition(start, "", None, tag)
        else:
            stored_scopes = _stored_scopes(user_id)
        if stored_scopes is not None:
            scopes = stored_scopes
        return _snapshot_page_from(position, scopes, reader_device_id, limit, record_types)


@contextmanager
def _one_database_snapshot() -> Iterator[None]:
    """Read in one snapshot of the database: the user's scopes with the records they see.

    Read at different moments, a member could leave a unit and a record then move into it
    between the two: served, that record is never removed by the feed after the snapshot,
    which reads the unit only up to the leave (and the leave's removal did not name it).
    Within a transaction the caller opened, its reads are as it takes them.
    """
    if connection.in_atomic_block:
        yield
        return
    with transaction.atomic():
        with connection.cursor() as cursor:
            cursor.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        yield


def _stored_scopes(user_id: UUID | None) -> list[str] | None:
    if user_id is None:
        return None
    return UserScopeState.objects.filter(user_id=user_id).values_list("scopes", flat=True).first()


def _snapshot_page_from(
    position: SnapshotPosition, scopes: list[str], reader_device_id: UUID, limit: int, record_types: list[str] | None
) -> SnapshotPage:
    tag = _device_tag(reader_device_id)
    rows: list[tuple[str, UUID, int, str]] = []
    after = position.after
    current = position.audience
    with connection.cursor() as db:
        db.execute(
            f"SELECT audience FROM ({_AUDIENCES_SQL}) AS a(audience) WHERE audience >= %s ORDER BY audience",  # noqa: S608 — a constant
            [*_audiences_params(sorted(set(scopes)), []), position.audience],
        )
        audiences = [audience for (audience,) in db.fetchall()]
        for audience in audiences:
            if audience != position.audience:
                after = None
            current = audience
            wanted = limit - len(rows) + 1
            if record_types is not None:
                sql = _SNAPSHOT_OF_TYPES_FROM_START_SQL if after is None else _SNAPSHOT_OF_TYPES_SQL
                db.execute(sql, [audience, after or _LOWEST_UUID, record_types, wanted])
            elif after is None:
                db.execute(_SNAPSHOT_FROM_START_SQL, [audience, _LOWEST_UUID, wanted])
            else:
                db.execute(_SNAPSHOT_SQL, [audience, after, wanted])
            # Health fields are stored sealed: opened in the text, still never parsed.
            fetched = [(kind, record_id, version, sealing.unseal_text(data)) for kind, record_id, version, data in db]
            if len(fetched) > limit - len(rows):
                fetched = fetched[: limit - len(rows)]
                rows += fetched
                after = fetched[-1][1] if fetched else after
                next_cursor = SnapshotPosition(position.feed, current, after, tag).encode()
                return SnapshotPage(rows=rows, cursor=next_cursor, feed_cursor=None)
            rows += fetched
            if len(rows) >= limit:
                after = fetched[-1][1] if fetched else after
                next_cursor = SnapshotPosition(position.feed, current, after, tag).encode()
                return SnapshotPage(rows=rows, cursor=next_cursor, feed_cursor=None)
    return SnapshotPage(rows=rows, cursor=None, feed_cursor=position.feed.encode(reader_device_id))


def synced_type_of(record_id: UUID) -> str | None:
    """The synced type of the record with this id, if sync has one: sync knows a record by its
    id alone, so a service creating a record under an id a client chose asks whether another
    record holds it first (publishing over it would replace that record on every device)."""
    return SyncedRecord.objects.filter(record_id=record_id).values_list("record_type", flat=True).first()


def heads_written(*, record_ids: Iterable[UUID]) -> dict[UUID, tuple[int, int | None]]:
    """Each synced record's version and the transaction that wrote it (None: written before
    heads kept it), by id, in one query: what a device's pull had reached of a record
    (``FeedPosition.is_past``) is told by the feed's order, without reading the feed."""
    return {
        record_id: (version, written)
        for record_id, version, written in SyncedRecord.objects.filter(
            record_id__in=bulk.any_of(record_ids, "uuid")
        ).values_list("record_id", "version", "written_in_transaction")
    }


def record_as_served(*, record_type: str, record_id: UUID) -> dict[str, Any] | None:
    """A live synced record of this type as the snapshot serves it, ``{"type", "id", "version",
    "data"}``: for a service's answer to the client that wrote it, which then holds it as its
    devices do. None when sync has no such record under the id (deleted, another type's,
    or never published)."""
    head = (
        SyncedRecord.objects.filter(record_id=record_id, record_type=record_type, is_deleted=False)
        .values_list("version", "data")
        .first()
    )
    if head is None:
        return None
    version, data = head
    return {"type": record_type, "id": str(record_id), "version": version, "data": data}


def last_mutation_id(*, device_id: UUID) -> int:
    """The highest mutation id the server has stored for this device (0 before its first).

    A device whose counter went back (its local database restored from a backup, or reset
    with its token kept) numbers its new mutations above this; what it restored keeps its ids."""
    highest = Mutation.objects.filter(device_id=device_id).aggregate(highest=Max("mutation_id"))["highest"]
    return int(highest or 0)


# What people must see: quarantined mutations and open conflicts.

_OVERSEERS = frozenset({Role.SUPERVISOR, Role.ADMINISTRATOR})
_CONFLICT_RESOLVERS = frozenset({Role.CASE_MANAGER, Role.SUPERVISOR, Role.ADMINISTRATOR})


# Kept in quarantine and not set aside: what a supervisor still has to review.
AWAITING_REVIEW = Q(status=MutationStatus.QUARANTINED, dismissed_at=None)


def quarantined_mutations_visible_to(*, user: User) -> QuerySet[Mutation]:
    """A user sees their own quarantined mutations (those set aside too, saying why), and a
    supervisor those they review."""
    return (
        Mutation.objects.filter(status=MutationStatus.QUARANTINED)
        .filter(Q(user=user) | (_reviewed_by(user) & Q(dismissed_at=None)))
        .select_related("device", "user")
    )


def quarantined_mutations_reviewable_by(*, user: User) -> QuerySet[Mutation]:
    """The quarantined mutations a supervisor reviews (and may apply again or set aside): those
    of their programs' records, whoever wrote them (a writer who is not their supervisor never
    releases their own), but those a supervisor already set aside."""
    return Mutation.objects.filter(AWAITING_REVIEW).filter(_reviewed_by(user))


def quarantined_set_aside_as(mutations: QuerySet[Mutation], *, code: DismissCode | None) -> QuerySet[Mutation]:
    """Those of these quarantined mutations set aside as ``code`` says: by the server,
    superseded by their device's later create of the record (SUPERSEDED), which no supervisor
    may have read; by a supervisor after review (REVIEWED: any other set aside). With no code,
    those not set aside: waiting for review."""
    if code is None:
        return mutations.filter(dismissed_at=None)
    set_aside = mutations.filter(dismissed_at__isnull=False)
    if code == DismissCode.SUPERSEDED:
        return set_aside.filter(dismiss_code=DismissCode.SUPERSEDED)
    return set_aside.exclude(dismiss_code=DismissCode.SUPERSEDED)


def _reviewed_by(user: User) -> Q:
    """A mutation's program is its record's, or for a refused create the program of the unit
    or parent record it names (apps.sync.push), the server's or its writer's quarantined
    create of it, if its writer works for that program or has left it; otherwise the one
    program its writer works for (working for none, the one they left). One with none has a
    writer in several programs, and may be any one's: it goes to supervisors of all the
    writer's programs, never across programs (a writer in none now: to no supervisor)."""
    supervised = user.memberships.filter(role__in=_OVERSEERS).values("program_id")
    outside = Membership.objects.exclude(program__in=supervised)
    within = User.objects.filter(memberships__program__in=supervised).exclude(memberships__in=outside)
    return Q(program__in=supervised) | Q(program=None, user__in=within)


def open_conflicts_visible_to(*, user: User) -> QuerySet[Conflict]:
    """Case managers and supervisors see their programs' open conflicts; a field user sees
    the conflicts of their own mutations, of records they may still see: a conflict holds a
    colleague's value, which a writer who has left the crew or the program may not read."""
    resolving = user.memberships.filter(role__in=_CONFLICT_RESOLVERS).values("program_id")
    still_seen = SyncedRecord.objects.filter(scopes__overlap=scopes_for_user(user)).values("record_id")
    return Conflict.objects.filter(resolved_at=None).filter(
        Q(user=user, record_id__in=still_seen) | Q(program__in=resolving)
    )


def edit_against_delete(conflict: Conflict) -> dict[str, Any] | None:
    """The edit on the other side of a delete, by wire field, for a ``delete_vs_edit`` or
    ``edit_vs_delete`` conflict: what the case manager weighs the delete against, which the
    conflict's own values (one field's, empty for a delete) do not show. None for a conflict
    of one field's two values.

    An edit that met a delete is the device's, as it sent it. A delete that met an edit met
    what others wrote after the version the deleting device had: the fields they changed,
    with their values at the version the conflict shows. The values are the record's health
    information: a reader shows them where the conflict's own values are shown, and audits
    them as a read of the record as it does those.
    """
    mutation = conflict.mutation
    if conflict.kind == ConflictKind.EDIT_VS_DELETE:
        fields = mutation.payload.get("fields") if isinstance(mutation.payload, dict) else None
        return {name: fields[name] for name in sorted(fields)} if isinstance(fields, dict) else {}
    if conflict.kind != ConflictKind.DELETE_VS_EDIT:
        return None
    versions = RecordVersion.objects.filter(record_id=conflict.record_id, version__lte=conflict.server_version)
    if mutation.base_version is not None:
        versions = versions.filter(version__gt=mutation.base_version)
    # The deleting device's own writes since were seen by it: they are not what it met.
    changed = set()
    for fields in versions.exclude(device_id=conflict.device_id).values_list("changed_fields", flat=True):
        changed.update(fields)
    shown = (
        RecordVersion.objects.filter(record_id=conflict.record_id, version=conflict.server_version)
        .values_list("data", flat=True)
        .first()
    )
    if not isinstance(shown, dict):
        return {}
    return {name: shown.get(name) for name in sorted(changed) if name in shown}


ListedModel = TypeVar("ListedModel", bound=Model)


@dataclass(frozen=True)
class ListPage(Generic[ListedModel]):
    items: list[ListedModel]
    has_more: bool
    cursor: str | None  # where the next page starts; None on the last


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)


def newest_first_page(
    rows: QuerySet[ListedModel], *, time_field: str, cursor: str | None, limit: int
) -> ListPage[ListedModel]:
    """A page of these rows, newest first (by ``time_field``, then id), from the cursor the
    page before answered with. Keyset paging: rows added meanwhile never shift a page."""
    if cursor:
        at, pk = _list_position(cursor, rows.model)
        rows = rows.filter(Q(**{f"{time_field}__lt": at}) | Q(**{time_field: at, "pk__lt": pk}))
    items = list(rows.order_by(f"-{time_field}", "-pk")[: limit + 1])
    has_more = len(items) > limit
    items = items[:limit]
    next_cursor = None
    if has_more:
        last = items[-1]
        text = f"{(getattr(last, time_field) - _EPOCH) // _MICROSECOND}.{last.pk}"
        next_cursor = base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")
    return ListPage(items=items, has_more=has_more, cursor=next_cursor)


def _list_position(cursor: str, model: type[Model]) -> tuple[datetime, Any]:
    try:
        text = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        micros, _dot, pk_text = text.partition(".")
        if not is_counter_text(micros):
            raise ValueError(text)
        pk = model._meta.pk.to_python(pk_text)
        if isinstance(pk, int) and not is_counter(pk):
            raise ValueError(text)
        return _EPOCH + int(micros) * _MICROSECOND, pk
    except (binascii.Error, UnicodeDecodeError, ValueError, ValidationError, OverflowError) as error:
        raise InvalidCursor("Not a cursor this list issued.") from error
