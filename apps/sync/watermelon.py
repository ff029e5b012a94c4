"""A WatermelonDB-compatible pull / push pair over the same feed, ledger and merge.

WatermelonDB's sync protocol has two traps that lose data, and this adapter defeats both:

1. A record in a pull's ``deleted`` list is destroyed on the device even when it has
   unpushed local edits. So removals of clinical records are never sent as ``deleted``:
   they come as ``updated`` rows with ``deleted: true``. Watermelon keeps the local edits
   (per-column), the edits are pushed, and the server keeps them (a conflict or a
   quarantine) instead of the device silently dropping them.
2. One failing record fails a whole push, and the queue is stuck. So the push never fails
   for a record's content: each record is a mutation of its own, and the ones that are
   quarantined are answered in ``experimentalRejectedIds`` while the rest apply.

Every upsert is sent as ``updated`` (clients use ``sendCreatedAsUpdated: true``) and a
device's own writes are not sent back to it, so its writes never come back as creations.
WatermelonDB cannot number its changes, so a mutation is keyed by its content: pushing the
same record state again is a replay. Tables need an ``updated_at`` column (WatermelonDB sets
it on every local change, and an updated row without it is refused: only it tells a value
changed back apart from a replay) and a ``server_version`` number column (the base of the
merge).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from apps.accounts.models import Device, User
from apps.accounts.selectors import TokenProblem
from apps.audit.services import Accessor
from apps.common.ids import CANONICAL_UUID, canonical_uuid
from apps.sync import conf, push, registry, selectors
from apps.sync.models import ChangeOperation, IssuedCursor, RemoveReason

_LOCAL_COLUMNS = {"id", "_status", "_changed", "server_version", "updated_at", "created_at"}
_PULL_PAGE = 500
_PULL_PAGES_PER_SYNC = 20
# An issued timestamp's position is the feed's, or, while a first sync is under way, this
# prefix and the snapshot's cursor (feed cursors are base64: they never hold a colon).
_SNAPSHOT_POSITION = "snapshot:"
# While an app's schema migration is served: this prefix and, in JSON, the migrated types, the
# cursor of their snapshot (null at its start) and the position to go on from once it is done.
_MIGRATION_POSITION = "migration:"
_SNAPSHOT_READ = 2_000  # records per query of the snapshot


class UnknownTimestamp(selectors.CursorExpired):
    """A lastPulledAt this server did not issue to this device (or has forgotten)."""


class InvalidTimestamp(ValueError):
    """A lastPulledAt that no timestamp this server issues can be."""


class InvalidChanges(ValueError):
    """A pushed body or changes object of the wrong shape; ``field`` names where."""

    def __init__(self, detail: str, field: str, code: str = "invalid_input") -> None:
        super().__init__(detail)
        self.field = field
        self.code = code


def parse_last_pulled_at(raw: str) -> int | None:
    """The timestamp a pull sends (None: the first sync)."""
    if raw in ("", "null", "0"):
        return None
    if selectors.is_counter_text(raw):  # an issued timestamp is a bigint id
        return int(raw)
    raise InvalidTimestamp("last_pulled_at is a timestamp this server issued.")


_PUSH_KEYS = frozenset({"changes", "lastPulledAt"})


def push_body_changes(body: Any) -> Any:
    """The changes of a pushChanges body, once the body's own keys are checked. Its
    ``lastPulledAt`` (checked here) goes to ``push_changes``."""
    if not isinstance(body, dict) or not isinstance(body.get("changes"), dict):
        raise InvalidChanges('The body is {"changes": {...}, "lastPulledAt": n}.', "changes")
    unknown = sorted(set(body) - _PUSH_KEYS)
    if unknown:
        raise InvalidChanges(f"Unknown key {unknown[0]!r}.", unknown[0], code="unknown_field")
    last_pulled_at = body.get("lastPulledAt")
    if last_pulled_at is not None and not selectors.is_counter(last_pulled_at):
        raise InvalidChanges("lastPulledAt is the timestamp of the last pull, or null.", "lastPulledAt")
    return body["changes"]


_KINDS = ("created", "updated", "deleted")


def change_count(changes: Any) -> int:
    """How many records a pushed changes object holds, once its shape is checked."""
    if not isinstance(changes, dict):
        raise InvalidChanges("changes must be an object of tables", "changes")
    count = 0
    for table, table_changes in changes.items():
        if not isinstance(table_changes, dict):
            raise InvalidChanges(f"changes.{table} must be an object", f"changes.{table}")
        # A misspelt kind would otherwise drop its records without a word, and the app would
        # take them as pushed.
        unknown = sorted(set(table_changes) - set(_KINDS))
        if unknown:
            raise InvalidChanges(
                f"Unknown kind {unknown[0]!r}: changes are created, updated or deleted.",
                f"changes.{table}.{unknown[0]}",
                code="unknown_field",
            )
        for kind in _KINDS:
            if kind not in table_changes:
                continue  # none of that kind
            records = table_changes[kind]
            # Null too: WatermelonDB sends every kind as a list, empty when there is none of it.
            # A null is a client's fault (a pushChanges that lost the list), and read as none,
            # as a misspelt kind was, the records the app meant to send would be taken as pushed.
            if not isinstance(records, list):
                raise InvalidChanges(f"changes.{table}.{kind} is a list.", f"changes.{table}.{kind}")
            count += len(records)
    return count


# Far beyond any spelling of a UUID a client writes (uppercase, in braces, without dashes,
# or after "urn:uuid:", the longest at 45 characters), WatermelonDB's own ids (16) and any
# id an app's own generator makes (setGenerator takes any string; a prefix and two UUIDs are
# 75). A malformed id within it may name the app's record: it is quarantined and listed in
# experimentalRejectedIds, so the app keeps the record unsynced and its other changes sync.
# A longer one refuses the whole push, which stalls the app's every later push: no real
# app's id should reach it, and listed back it would fill the answer with whatever the body
# carried.
ID_MAX_CHARACTERS = 255


def _refuse_ids_too_long(changes: dict[str, Any]) -> None:
    """Refuse the push whose record ids (a row's ``id``, or a ``deleted`` entry) include a
    string over ``ID_MAX_CHARACTERS``, naming where, and never the id itself. Once the
    shape is checked (``change_count``)."""
    for table, table_changes in changes.items():
        for kind in _KINDS:
            for index, record in enumerate(_list(table_changes.get(kind))):
                place = f"changes.{table}.{kind}.{index}"
                if kind != "deleted":  # a deleted entry is the id itself
                    record = record.get("id") if isinstance(record, dict) else None
                    place = f"{place}.id"
                if isinstance(record, str) and len(record) > ID_MAX_CHARACTERS:
                    raise InvalidChanges(
                        f"An id is {CANONICAL_UUID}; this one is over {ID_MAX_CHARACTERS} characters.",
                        place,
                        code="invalid_id",
                    )


def _empty_changes() -> dict[str, dict[str, list[Any]]]:
    return {
        synced_type.watermelon_table: {"created": [], "updated": [], "deleted": []}
        for synced_type in registry.all_types()
        if synced_type.watermelon_table
    }


def _raw(record_id: str, data: dict[str, Any], version: int | None) -> dict[str, Any]:
    raw = {name: value for name, value in data.items() if name not in _LOCAL_COLUMNS}
    raw["id"] = record_id
    raw["server_version"] = version or 0
    return raw


def parse_migration(raw: str) -> list[str]:
    """The record types whose records a pull's ``migration`` asks for whole: those of the
    tables the app's schema migration added, or added columns to (WatermelonDB sends
    ``{"from": n, "tables": [...], "columns": [{"table": ..., "columns": [...]}]}``, or
    null). Tables this server does not sync are not asked for."""
    if raw in ("", "null"):
        return []
    try:
        migration = json.loads(raw)
    except (ValueError, RecursionError):  # nested deeper than the parser goes: no migration
        raise InvalidMigration("migration is the JSON WatermelonDB sends, or null.") from None
    if migration is None:
        return []
    tables = migration.get("tables") if isinstance(migration, dict) else None
    columns = migration.get("columns") if isinstance(migration, dict) else None
    if not (
        isinstance(tables, list)
        and all(isinstance(table, str) for table in tables)
        and isinstance(columns, list)
        and all(isinstance(added, dict) and isinstance(added.get("table"), str) for added in columns)
    ):
        raise InvalidMigration('migration is {"from": n, "tables": [...], "columns": [{"table": ...}]}, or null.')
    named = [*tables, *(added["table"] for added in columns)]
    types = {synced_type.name for table in named if (synced_type := registry.by_watermelon_table(table)) is not None}
    return sorted(types)


class InvalidMigration(ValueError):
    """A migration parameter of another shape than WatermelonDB's."""


def pull(
    *, device: Device, scopes: list[str], last_pulled_at: int | None, migrated_types: list[str] | None = None
) -> dict[str, Any]:
    """Answer WatermelonDB's pullChanges: ``{"changes": ..., "timestamp": n, "has_more": b}``.

    ``migrated_types``: the app's schema migration added their tables or columns, so the
    app holds none of their records, or holds them without the new columns: they come
    whole first (the snapshot of those types, in parts), then the feed from
    ``last_pulled_at`` as usual."""
    changes = _empty_changes()
    if not last_pulled_at:
        position, has_more = _snapshot_into(changes, scopes, device, cursor=None)
    else:
        issued = IssuedCursor.objects.filter(pk=last_pulled_at, device=device).first()
        if issued is None:
            raise UnknownTimestamp(
                "This lastPulledAt has expired (older than the feed keeps) or is not this device's;"
                " push, then reset the local database and sync again."
            )
        position = issued.position
        if migrated_types and not position.startswith(_MIGRATION_POSITION):  # else it is under way
            position = _migration_position(migrated_types, None, then=position)
        position, has_more = _continue_into(changes, scopes, device, position)
    timestamp = IssuedCursor.objects.create(device=device, position=position).pk
    # Only tables with changes: an app that does not sync a table is not warned about it.
    changes = {table: kinds for table, kinds in changes.items() if any(kinds.values())}
    # Beside WatermelonDB's two keys, which it ignores: a pull may bring little or nothing
    # (entries of types the app does not sync, its own writes) with more still to come.
    return {"changes": changes, "timestamp": timestamp, "has_more": has_more}


def _continue_into(
    changes: dict[str, dict[str, list[Any]]], scopes: list[str], device: Device, position: str
) -> tuple[str, bool]:
    """Fill ``changes`` from an issued position: a migration's snapshot, a first sync's, or
    the feed's."""
    if position.startswith(_MIGRATION_POSITION):
        migration = json.loads(position.removeprefix(_MIGRATION_POSITION))
        types, then = migration["types"], migration["then"]
        part = _snapshot_part_into(changes, scopes, device, cursor=migration["snapshot"], types=types)
        if part.more is not None:
            return _migration_position(types, part.more, then=then), True
        # The types' records are all served: what changed since last_pulled_at follows, of
        # every type, from where the app's sync had reached (removals included).
        return then, True
    if position.startswith(_SNAPSHOT_POSITION):
        return _snapshot_into(changes, scopes, device, cursor=position.removeprefix(_SNAPSHOT_POSITION))
    return _feed_into(changes, scopes, position, device)


def _migration_position(types: list[str], snapshot_cursor: str | None, *, then: str) -> str:
    return _MIGRATION_POSITION + json.dumps({"types": types, "snapshot": snapshot_cursor, "then": then})


def _snapshot_into(
    changes: dict[str, dict[str, list[Any]]], scopes: list[str], device: Device, *, cursor: str | None
) -> tuple[str, bool]:
    """Fill ``changes`` with the next part of the snapshot (from its start when ``cursor`` is
    None); the position to continue from, and whether the snapshot holds more.

    A part, not all of it: a device with tens of thousands of records gets them in pulls of
    ``WATERMELON_FIRST_SYNC_PART`` records, each part applied and its position kept before
    the next, so a dropped connection costs one part, not the whole first sync. The last part
    ends with the feed's position from the snapshot's start, as the snapshot endpoint's last
    page does, and says there is more: the feed from there is the first sync's too."""
    part = _snapshot_part_into(changes, scopes, device, cursor=cursor)
    if part.more is None:
        # More to come even so: what changed since the snapshot began (a record written, a
        # unit left) is in the feed from its start, which the next pull reads.
        assert part.feed_cursor is not None
        return part.feed_cursor, True
    return _SNAPSHOT_POSITION + part.more, True


@dataclass(frozen=True)
class _Part:
    more: str | None  # the snapshot's cursor to continue from; None once it is all served
    feed_cursor: str | None  # then: the feed's position from the snapshot's start


def _snapshot_part_into(
    changes: dict[str, dict[str, list[Any]]],
    scopes: list[str],
    device: Device,
    *,
    cursor: str | None,
    types: list[str] | None = None,
) -> _Part:
    """Fill ``changes`` with the next ``WATERMELON_FIRST_SYNC_PART`` records of the snapshot
    (of these record ``types`` only, if given)."""
    wanted = conf.WATERMELON_FIRST_SYNC_PART
    while True:
        page = selectors.snapshot_page(
            scopes=scopes,
            cursor=cursor,
            reader_device_id=device.pk,
            limit=min(_SNAPSHOT_READ, wanted),
            user_id=device.user_id,
            record_types=types,
        )
        for record_type, record_id, version, data in page.rows:
            synced_type = registry.get(record_type)
            if synced_type is not None and synced_type.watermelon_table:
                changes[synced_type.watermelon_table]["updated"].append(_raw(str(record_id), json.loads(data), version))
        if page.cursor is None:
            return _Part(None, page.feed_cursor)
        cursor = page.cursor
        wanted -= len(page.rows)
        if wanted <= 0:
            return _Part(cursor, None)


def _feed_into(
    changes: dict[str, dict[str, list[Any]]], scopes: list[str], cursor: str, device: Device
) -> tuple[str, bool]:
    """Fill ``changes`` from the feed after ``cursor``; the cursor reached, and whether the
    feed holds more after it (a pull reads at most ``_PULL_PAGES_PER_SYNC`` pages)."""
    latest: dict[str, tuple[registry.SyncedType, dict[str, Any] | None]] = {}
    for _ in range(_PULL_PAGES_PER_SYNC):
        page = selectors.feed_page(
            scopes=scopes, cursor=cursor, limit=_PULL_PAGE, reader_device_id=device.pk, user_id=device.user_id
        )
        for entry in page.entries:
            synced_type = registry.get(entry.record_type)
            if synced_type is None or not synced_type.watermelon_table:
                continue
            record_id = str(entry.record_id)
            earlier = latest.pop(record_id, None)  # keep feed order: the last change of a record wins
            if entry.operation == ChangeOperation.UPSERT:
                latest[record_id] = (synced_type, _raw(record_id, entry.data, entry.version))
            elif (
                entry.reason == RemoveReason.DELETED
                and synced_type.is_clinical
                and earlier is not None
                and (changed := earlier[1]) is not None
            ):
                # Changed, then deleted, since the device's last pull: the change comes with the
                # flag. Alone, the flag would leave the device's deleted copy without what the
                # server keeps of the record (an assessment written just before the delete).
                version = entry.version or changed["server_version"]
                latest[record_id] = (synced_type, {**changed, "deleted": True, "server_version": version})
            else:
                latest[record_id] = (synced_type, None)
        cursor = page.position.encode(device.pk)
        if not page.has_more:
            break
    for record_id, (synced_type, raw) in latest.items():
        table = changes[synced_type.watermelon_table]
        if raw is not None:
            table["updated"].append(raw)
        elif synced_type.is_clinical:
            # Trap 1: never "deleted" for clinical records; a flag keeps unpushed edits alive.
            table["updated"].append({"id": record_id, "deleted": True})
        else:
            table["deleted"].append(record_id)
    return cursor, page.has_more


def push_changes(
    *,
    device: Device,
    user: User,
    changes: Any,
    client_version: str = "",
    lockout: TokenProblem | None = None,
    accessor: Accessor | None = None,
    last_pulled_at: int | None = None,
) -> dict[str, Any]:
    """Answer WatermelonDB's pushChanges: apply each record alone; name the refused ones. The
    answer's ``results`` are the push's, one per mutation its records were made into (a record
    made and deleted offline is two). ``last_pulled_at``, the body's: what the app had pulled
    when it pushed (``_pulled_through``)."""
    change_count(changes)  # its shape
    _refuse_ids_too_long(changes)
    writes: list[tuple[str, str, dict[str, Any], dict[str, Any] | None]] = []
    deletes: list[tuple[str, str, dict[str, Any], dict[str, Any] | None]] = []
    for table in _parents_first(changes):
        synced_type = registry.by_watermelon_table(table)
        type_name = synced_type.name if synced_type else f"watermelon.{table}"
        for place, mutation, problem in _mutations_of(type_name, table, changes[table]):
            (deletes if mutation["op"] == "delete" else writes).append((table, place, mutation, problem))
        deletes += [
            (table, place, mutation, None) for place, mutation in _deletes_of_created(type_name, table, changes[table])
        ]
    # Every delete after every create and update of the push: WatermelonDB does not say in
    # which order the app made its changes, and a record made under one the app deleted (a
    # note of an encounter deleted afterwards, or made and deleted offline with it) is
    # created while its parent is still live.
    mutations: list[dict[str, Any]] = []
    places: list[tuple[str, str]] = []  # (table, where the record is in the body)
    problems: dict[int, dict[str, Any]] = {}  # by mutation
    marked_deleted: dict[int, Any] = {}  # by mutation: the ids markAsDeleted() sent
    for table, place, mutation, problem in writes + deletes:
        if problem is not None:
            problems[len(mutations)] = problem
        if place.startswith(f"changes.{table}.deleted."):
            marked_deleted[len(mutations)] = mutation["id"]
        mutations.append(mutation)
        places.append((table, place))
    pulled_through = _pulled_through(device, last_pulled_at)
    results = push.push_mutations(
        device=device,
        user=user,
        mutations=mutations,
        client_version=client_version,
        keyed_by_content=True,
        lockout=lockout,
        accessor=accessor,
        problems=problems,
        pulled_through=pulled_through,
        bases=_creates_held(marked_deleted, pulled_through),
    ).results
    rejected: dict[str, list[str]] = {}
    for (table, place), mutation, result in zip(places, mutations, results, strict=True):
        if result.get("error") is not None:
            result["error"] = {**result["error"], "field": _field_in_body(result["error"]["field"], table, place)}
        refused = result["status"] in (push.PushStatus.QUARANTINED, push.PushStatus.REJECTED) or (
            result["status"] == push.PushStatus.DUPLICATE
            and result.get("original_status") in (push.PushStatus.QUARANTINED, push.PushStatus.REJECTED)
        )
        # Only a string can be the id of a local record (one of another kind names nothing).
        # Named once, though a record made and deleted offline is two mutations.
        if refused and isinstance(mutation.get("id"), str) and mutation["id"] not in rejected.get(table, ()):
            rejected.setdefault(table, []).append(mutation["id"])
    return {"experimentalRejectedIds": rejected, "results": results}


def _pulled_through(device: Device, last_pulled_at: int | None) -> selectors.FeedPosition | None:
    """Where in the feed the app's last pull reached: it holds every version written below
    that, of the records it may see. The app keeps an edited record's older
    ``server_version`` through a pull (the conflictResolver the README gives), and never
    takes the version its own push made: knowing what it had pulled, the push tells which of
    its writes it holds whole (``RecordVersion.held_by_writer``). None when unknown, or part
    way through a first sync or a migration, which has not brought every record yet."""
    if not last_pulled_at:
        return None
    position = IssuedCursor.objects.filter(pk=last_pulled_at, device=device).values_list("position", flat=True).first()
    if position is None or position.startswith((_SNAPSHOT_POSITION, _MIGRATION_POSITION)):
        return None
    try:
        return selectors.FeedPosition.decode(position, reader_device_id=device.pk)
    except selectors.InvalidCursor:
        return None


def _creates_held(marked_deleted: dict[int, Any], pulled: selectors.FeedPosition | None) -> dict[int, int]:
    """The base of each delete ``markAsDeleted()`` sent (an id under ``deleted``, by mutation)
    that the app is known to have held the record for: its create, version 1.

    Not the version the app's last pull had reached. The push's ``lastPulledAt`` is the pull
    its own sync made just before it, and WatermelonDB passes over a pulled change of a
    record it holds deleted ("deletion will be pushed later"): a colleague's edit made while
    the app was offline with the record deleted is served by that pull, and never seen. Only
    ids come under ``deleted``, nothing of when the app deleted the record, so nothing later
    than the record's first version is known to have been seen by the delete. That one was:
    the app had the record, so its pull had brought it (or the app created it), at version 1
    or later. A later version decides, as before: a colleague's edit, pulled or not, keeps
    the delete a ``delete_vs_edit`` conflict, unless a later version of the app's own holds
    it (pushed after the pull that brought it: ``RecordVersion.held_by_writer``); the app's
    own writes do not (and show it had the record).

    Where the record has no version but its create, that create must have been served to the
    app by its last pull (written in a transaction the pull had passed, or before heads kept
    the transaction, long past): a record made since the pull, which the app cannot have
    had, keeps the delete without a base. Without ``pulled`` (no ``lastPulledAt``, one this
    server does not know, or one part way through a first sync or a migration), the app's
    records are not known to have come from this server as it stands (a database restored
    from a backup, say), and nothing is taken. One query for the push's deleted ids, none
    for a push without them."""
    if pulled is None or not marked_deleted:
        return {}
    record_ids = {index: record_id for index, sent in marked_deleted.items() if (record_id := canonical_uuid(sent))}
    heads = selectors.heads_written(record_ids=set(record_ids.values()))
    bases: dict[int, int] = {}
    for index, record_id in record_ids.items():
        version, written = heads.get(record_id, (0, None))
        if version > 1 or (version == 1 and (written is None or pulled.is_past(written))):
            bases[index] = 1
    return bases


def _field_in_body(field: str | None, table: str, place: str) -> str:
    """Where a refusal points, in the pushed body's own terms: the push names the parts of the
    mutation made of a record (``fields.started_at``, ``mutations.3.id``); the app sent
    ``changes.encounters.created.0.started_at``. A refusal of the whole record (a locked-out
    device's, one the database refused) names the record."""
    if field is None:
        return place
    parts = field.split(".")
    if parts[0] == "mutations":
        parts = parts[2:]
    if parts[:1] in (["fields"], ["content"]):
        parts = parts[1:]
    elif parts == ["base_version"]:
        parts = ["server_version"]
    elif parts == ["type"]:
        return f"changes.{table}"  # a table the server does not sync
    elif parts == ["id"] and place.split(".")[-2] == "deleted":
        parts = []  # a deleted entry is the id itself
    return ".".join([place, *parts])


def _parents_first(changes: dict[str, Any]) -> list[str]:
    """The pushed tables in the order their records apply: a record made offline with its
    parent (an encounter with its person) comes after it. Unknown tables come last, to be
    refused."""
    known = [
        synced_type.watermelon_table
        for synced_type in registry.in_registration_order()
        if synced_type.watermelon_table and synced_type.watermelon_table in changes
    ]
    return known + sorted(changes.keys() - set(known))


# A delete flag that is not a boolean (text, a number, null) refuses its record whole, as a
# value of the wrong type does: read as false, the rest of a record the app may have meant
# to delete would apply.
_FLAG_NOT_BOOLEAN = {"code": "invalid_fields", "detail": "Send true or false.", "field": "fields.deleted"}
# An updated row is keyed by its content, and only its updated_at tells two local changes of
# a record to the same values apart: without it, a value changed back and forth (A, B, A, then
# B again) came back as a replay of the first B, answered settled and never applied.
_NO_CHANGE_TIME = {
    "code": "required",
    "detail": "An updated row carries updated_at, the time of its local change in milliseconds.",
    "field": "fields.updated_at",
}
_CHANGE_TIME_UNREADABLE = {
    "code": "invalid_observed_at",
    "detail": "updated_at is the time of the local change: milliseconds since 1970, in the years 1 to 9999.",
    "field": "fields.updated_at",
}


def _mutations_of(
    type_name: str, table: str, table_changes: dict[str, Any]
) -> Iterable[tuple[str, dict[str, Any], dict[str, Any] | None]]:
    """Each record of a table as a mutation, with where it is in the pushed body and what is
    wrong with it that the push cannot see (None: nothing)."""
    for index, raw in enumerate(_list(table_changes.get("created"))):
        fields = _fields(raw, None)
        yield (
            f"changes.{table}.created.{index}",
            {
                "type": type_name,
                "id": raw.get("id") if isinstance(raw, dict) else None,
                "op": "create",
                "fields": fields,
                "content": raw,
                **_observed_at(raw),
            },
            _change_time_problem(raw) if type(fields.get("deleted", False)) is bool else _FLAG_NOT_BOOLEAN,
        )
    for index, raw in enumerate(_list(table_changes.get("updated"))):
        changed = _changed_columns(raw)
        fields = _fields(raw, changed)
        deleted = fields.pop("deleted", False)
        base = raw.get("server_version") if isinstance(raw, dict) else None
        # 0 (or none) is a record never synced: no base. Anything else goes to the push as it
        # was sent, which refuses what is not a version (text, a negative, a fraction) naming
        # it, rather than merging the edit against no base at all.
        if type(base) is int and base == 0:
            base = None
        mutation = {
            "type": type_name,
            "id": raw.get("id") if isinstance(raw, dict) else None,
            "op": "update",
            "base_version": base,
            "fields": fields,
            "content": raw,
            **_observed_at(raw),
        }
        problem = (
            _change_time_problem(raw)
            if isinstance(raw, dict) and raw.get("updated_at") is not None
            else _NO_CHANGE_TIME
        )
        if deleted is True:
            # Trap 1, push side: a clinical delete travels as a flag. The row also holds what
            # the app changed before the delete (an assessment written, then the encounter
            # deleted): that edit applies first, as a record made and deleted offline is
            # created first, so the server keeps it with the deleted record.
            if fields:
                yield f"changes.{table}.updated.{index}", mutation, problem
            mutation = {**mutation, "op": "delete", "fields": {}}
        yield (
            f"changes.{table}.updated.{index}",
            mutation,
            problem if type(deleted) is bool else _FLAG_NOT_BOOLEAN,
        )
    for index, record_id in enumerate(_list(table_changes.get("deleted"))):
        yield (
            f"changes.{table}.deleted.{index}",
            {"type": type_name, "id": record_id, "op": "delete", "content": record_id},
            None,
        )


def _observed_at(raw: Any) -> dict[str, str]:
    """The row's ``updated_at`` (milliseconds since 1970, WatermelonDB's clock of the local
    change) as the mutation's ``observed_at``: the device's time of the change, kept as the
    user observed it and checked for plausibility, as the other push's. Nothing when the row
    has no such number, or one no clock shows (``_change_time_problem`` refuses it)."""
    moment = _moment(_change_time(raw))
    return {} if moment is None else {"observed_at": moment.isoformat()}


def _change_time(raw: Any) -> int | float | None:
    """The row's ``updated_at``, if it is a number."""
    millis = raw.get("updated_at") if isinstance(raw, dict) else None
    return millis if type(millis) is int or type(millis) is float else None


def _moment(millis: int | float | None) -> datetime | None:
    if millis is None:
        return None
    try:
        return datetime.fromtimestamp(millis / 1000, tz=UTC)
    except (OverflowError, OSError, ValueError):
        return None


def _change_time_problem(raw: Any) -> dict[str, Any] | None:
    """A row whose ``updated_at`` is not a number, or one outside the years 1 to 9999, is
    refused, as the other push refuses an ``observed_at`` it cannot read: kept without a
    time, the device's broken clock (or client) went unnoticed."""
    if not isinstance(raw, dict) or raw.get("updated_at") is None:
        return None
    return _CHANGE_TIME_UNREADABLE if _moment(_change_time(raw)) is None else None


def _deletes_of_created(
    type_name: str, table: str, table_changes: dict[str, Any]
) -> Iterable[tuple[str, dict[str, Any]]]:
    """The delete of each record the app made and deleted before it was pushed: it comes under
    ``created`` with ``deleted: true``, and is created (its create keeps the flag among its
    fields, where it is ignored, so its content is what every release sent) and then deleted,
    so the server keeps it, soft-deleted, with all the app wrote of it."""
    for index, raw in enumerate(_list(table_changes.get("created"))):
        if isinstance(raw, dict) and raw.get("deleted") is True:
            yield (
                f"changes.{table}.created.{index}",
                {"type": type_name, "id": raw.get("id"), "op": "delete", "content": raw},
            )


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _changed_columns(raw: Any) -> set[str] | None:
    changed = raw.get("_changed") if isinstance(raw, dict) else None
    if not isinstance(changed, str) or not changed:
        return None
    return {column for column in changed.split(",") if column}


def _fields(raw: Any, only: set[str] | None) -> dict[str, Any]:
    if not isinstance(raw, dict):
        return {}
    return {
        name: value
        for name, value in raw.items()
        if name not in _LOCAL_COLUMNS and (only is None or name in only) and not name.startswith("_")
    }
