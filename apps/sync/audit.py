"""Every synced record a device receives or writes is health information (DESIGN.md P8):
the sync endpoints record who read or wrote which record, when, from which device."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any
from uuid import UUID

from apps.audit import registry as health_records
from apps.audit.models import AccessAction
from apps.audit.services import Accessor, record_access
from apps.sync import registry
from apps.sync.models import ChangeEntry, ChangeOperation, Conflict, Mutation

if TYPE_CHECKING:
    from apps.sync.push import LedgerRow

_WRITE_ACTIONS = {"create": AccessAction.CREATE, "update": AccessAction.UPDATE, "delete": AccessAction.DELETE}
# Results of mutations that changed (or tried to change and kept as a conflict) a record.
_WRITTEN = {"applied", "conflict"}


def _is_health_record(record_type: str) -> bool:
    # Synced records, and feed-only ones their app names as health information (incidents).
    return registry.get(record_type) is not None or health_records.is_health_record(record_type)


def is_audited(entry: ChangeEntry) -> bool:
    """Whether serving this feed entry reads a health record."""
    return entry.operation == ChangeOperation.UPSERT and _is_health_record(entry.record_type)


def record_reads(*, accessor: Accessor, records: Iterable[tuple[str, Any]]) -> None:
    """Audit records served to a device, given as (record type, record id) pairs."""
    by_type: dict[str, list[UUID]] = defaultdict(list)
    for record_type, record_id in records:
        if _is_health_record(record_type):
            by_type[record_type].append(UUID(str(record_id)))
    for record_type, record_ids in by_type.items():
        record_access(accessor=accessor, action=AccessAction.READ, record_type=record_type, record_ids=record_ids)


# What a kept copy that names no health record is audited as: the ledger row that keeps it,
# its number as the record id (UUID(int=n)).
KEPT_COPY = "sync.mutation"


def record_kept_copy_reads(*, accessor: Accessor, kept: Iterable[Mutation | Conflict]) -> None:
    """Audit quarantined mutations or conflicts shown to someone: each holds its record's data
    as a device sent it (and a conflict the server's too), so showing it reads that record. A
    mutation kept for naming no record the server could have (an id in another spelling, a
    type it does not sync) may hold health information all the same: its read is audited as
    the ledger row's (``KEPT_COPY``)."""
    named: list[tuple[str, UUID]] = []
    unnamed: list[UUID] = []
    for copy in kept:
        if copy.record_id is not None and _is_health_record(copy.record_type):
            named.append((copy.record_type, copy.record_id))
        elif isinstance(copy, Mutation):
            unnamed.append(UUID(int=copy.pk))
    record_reads(accessor=accessor, records=named)
    if unnamed:
        record_access(accessor=accessor, action=AccessAction.READ, record_type=KEPT_COPY, record_ids=unnamed)


def record_replayed_reads(*, accessor: Accessor, results: list[dict[str, Any]]) -> None:
    """Audit the records whose stored answer a push sent again with the record's data (a
    replay): that is a read. What a push wrote, the push audits as it applies it."""
    record_reads(
        accessor=accessor,
        records=(
            (result["type"], result["id"])
            for result in results
            if result.get("status") == "duplicate" and result.get("data") is not None and result.get("id")
        ),
    )


def record_ledger_writes(*, accessor: Accessor, mutations: Iterable[LedgerRow]) -> None:
    """Audit the records these ledger rows wrote (applied, or kept as a conflict as far as it
    merged), each as its operation: a create that applied is a create whatever a later
    mutation of its batch, rejected for reusing its id, meant to do. A delete of a record the
    server never had (made and deleted on the device) names no version: it touched nothing.
    A create that repeated the record as it stands (``repeated``) wrote nothing: its answer
    shows the record, a read."""
    written: list[tuple[str, Any, str | None]] = []
    repeated: list[tuple[str, Any]] = []
    for row in mutations:
        if row.result.get("status") not in _WRITTEN or row.record_id is None or row.result.get("version") is None:
            continue
        if row.result.get("repeated"):
            repeated.append((row.record_type, row.record_id))
        else:
            written.append((row.record_type, row.record_id, row.operation))
    _record_written(accessor=accessor, written=written)
    record_reads(accessor=accessor, records=repeated)


def _record_written(*, accessor: Accessor, written: Iterable[tuple[str, Any, str | None]]) -> None:
    by_key: dict[tuple[str, AccessAction], list[UUID]] = defaultdict(list)
    for record_type, record_id, operation in written:
        action = _WRITE_ACTIONS.get(str(operation), AccessAction.UPDATE)
        by_key[(record_type, action)].append(UUID(str(record_id)))
    for (record_type, action), record_ids in by_key.items():
        record_access(accessor=accessor, action=action, record_type=record_type, record_ids=record_ids)


def watermelon_records(changes: dict[str, dict[str, list[Any]]]) -> Iterable[tuple[str, Any]]:
    """(type, id) of every record a WatermelonDB changes object serves. A row flagged
    ``deleted`` is a removal (the id alone: a record deleted, or no longer the reader's to
    see), which serves nothing of the record, as a feed ``remove`` does not."""
    for table, kinds in changes.items():
        synced_type = registry.by_watermelon_table(table)
        if synced_type is None:
            continue
        for raw in (*kinds.get("created", []), *kinds.get("updated", [])):
            if isinstance(raw, dict) and raw.get("id") and raw.get("deleted") is not True:
                yield synced_type.name, raw["id"]
