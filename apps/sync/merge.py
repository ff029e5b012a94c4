"""Three-way merge of one record's fields, against the version the device last saw.

Pure functions: no database, no Django. The rules (DESIGN.md P3):

- a field only the device changed takes the device's value;
- a field only the server changed (since the device's base) keeps the server's value;
- a field both changed to the same value is settled;
- a field both changed to different values is a conflict: the record keeps the server's
  value and both are kept for a person to resolve. Nothing is silently overwritten;
- a field that attests others (a note's signature, its text) applies only where they hold
  what the device had when it changed it; otherwise it too is a conflict.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

MISSING: Any = object()


@dataclass(frozen=True)
class FieldConflict:
    field: str
    base: Any
    server: Any
    device: Any


@dataclass
class MergeResult:
    # Wire values the device changed that apply cleanly.
    changes: dict[str, Any] = field(default_factory=dict)
    conflicts: list[FieldConflict] = field(default_factory=list)


def merge_fields(
    *,
    base: Mapping[str, Any],
    current: Mapping[str, Any],
    incoming: Mapping[str, Any],
    attests: Mapping[str, Iterable[str]] | None = None,
) -> MergeResult:
    """Merge the device's ``incoming`` wire values into ``current``, given the ``base`` it saw.

    A field absent from ``base`` (an unknown base) is treated as changed on both sides, so
    a differing value is a conflict rather than a guess. ``attests``: fields whose change
    vouches for others' values (a signature for the text signed), by field.
    """
    result = MergeResult()
    for name, device_value in incoming.items():
        server_value = current.get(name)
        if device_value == server_value:
            continue
        base_value = base.get(name, MISSING)
        if base_value is not MISSING and server_value == base_value:
            result.changes[name] = device_value
        elif base_value is not MISSING and device_value == base_value:
            continue  # the device did not change it; the server's newer value stands
        else:
            result.conflicts.append(
                FieldConflict(
                    field=name,
                    base=None if base_value is MISSING else base_value,
                    server=server_value,
                    device=device_value,
                )
            )
    for name, attested in (attests or {}).items():
        if name in result.changes and not _holds_what_device_had(attested, base, current, incoming, result):
            # A signature given over text that someone else has changed since, or that stays
            # another's in a conflict, would vouch for words its author never read.
            base_value = base.get(name, MISSING)
            result.conflicts.append(
                FieldConflict(
                    field=name,
                    base=None if base_value is MISSING else base_value,
                    server=current.get(name),
                    device=result.changes.pop(name),
                )
            )
    return result


def holds_all_sent(result: MergeResult, *, current: Mapping[str, Any], incoming: Mapping[str, Any]) -> bool:
    """Whether the merged record holds every value the device sent: none kept as a conflict,
    none left as the server's newer value (the device not having changed it since its base).
    A value left so is not what a WatermelonDB app shows: it keeps its changed column over a
    pulled one."""
    return not result.conflicts and all(
        name in result.changes or current.get(name, MISSING) == value for name, value in incoming.items()
    )


def _holds_what_device_had(
    names: Iterable[str],
    base: Mapping[str, Any],
    current: Mapping[str, Any],
    incoming: Mapping[str, Any],
    result: MergeResult,
) -> bool:
    """Whether, once merged, these fields hold what the device had: the values it sent, or
    those of its base."""
    for name in names:
        had = incoming[name] if name in incoming else base.get(name, MISSING)
        if result.changes.get(name, current.get(name, MISSING)) != had:
            return False
    return True


@dataclass(frozen=True)
class VersionView:
    """What the merge needs to know of one stored version."""

    version: int
    data: Mapping[str, Any]
    device_id: Any
    changed_fields: Iterable[str]
    is_deleted: bool = False
    # The ledger row of the mutation that wrote it (None: not written by a device's push).
    mutation_id: int | None = None
    # That mutation's number on its device (None: a client that does not number its changes).
    made_as: int | None = None
    # Whether its writing device holds this version whole: it had pulled every earlier version
    # when it pushed the change, which merged cleanly (RecordVersion.held_by_writer).
    held_by_writer: bool = False


def _made_after(view: VersionView, made_before: int, made_as: int | None) -> bool:
    """Whether the device made the mutation that wrote ``view`` after the edit whose ledger
    row is ``made_before`` (numbered ``made_as`` on the device): by the device's numbering
    where both have one, since a mutation applied after review may have reached the server
    after the device's later ones; else in the order the server received them."""
    if made_as is not None and view.made_as is not None:
        return view.made_as > made_as
    return view.mutation_id is not None and view.mutation_id > made_before


def _own_and_earlier(view: VersionView, device_id: Any, made_before: int | None, made_as: int | None) -> bool:
    """Whether the device wrote ``view`` by a mutation it made before the edit (any of its
    writes, without ``made_before``)."""
    own = view.device_id is not None and view.device_id == device_id
    return own and (
        made_before is None
        or (
            view.mutation_id is not None
            and view.mutation_id != made_before
            and not _made_after(view, made_before, made_as)
        )
    )


def held_version(
    *,
    base_version: int,
    versions: Iterable[VersionView],
    device_id: Any,
    made_before: int | None = None,
    made_as: int | None = None,
) -> int:
    """The newest version the device is known to hold whole: its base, or a later version
    of its own earlier write that it held whole once pushed (``held_by_writer``). A client
    that does not take the versions its pushes made (WatermelonDB) keeps sending an older
    base, though what it edits since is that version."""
    held = base_version
    for view in versions:
        if view.version > held and view.held_by_writer and _own_and_earlier(view, device_id, made_before, made_as):
            held = view.version
    return held


def effective_base(
    *,
    base_version: int,
    versions: Iterable[VersionView],
    device_id: Any,
    made_before: int | None = None,
    made_as: int | None = None,
) -> dict[str, Any] | None:
    """The field values the device's edit was made against.

    That is the version it last pulled (or a newer one it holds whole, ``held_version``),
    advanced by the device's own earlier writes: a device that queued two edits of one field
    offline sent both against the same base, and its second edit must replace its first, not
    conflict with it. With ``made_before`` (the edit's ledger row, and ``made_as``, its
    number on the device), only the device's writes of mutations made before it count: an
    edit applied again after review must not take the device's own later edit as its base,
    and replace it unseen. Without a base (0), a field another writer changed after the
    device's own write of it is unknown again: the device did not write it last. Returns
    None when the base version is unknown.
    """
    ordered = sorted(versions, key=lambda view: view.version)
    base_version = held_version(
        base_version=base_version, versions=ordered, device_id=device_id, made_before=made_before, made_as=made_as
    )
    if base_version == 0:
        base: dict[str, Any] = {}
    else:
        found = next((view for view in ordered if view.version == base_version), None)
        if found is None:
            return None
        base = dict(found.data)
    for view in ordered:
        if view.version <= base_version:
            continue
        if _own_and_earlier(view, device_id, made_before, made_as):
            for name in view.changed_fields:
                if name in view.data:
                    base[name] = view.data[name]
        elif base_version == 0:
            for name in view.changed_fields:
                base.pop(name, None)
    return base


def changed_by_others_since(
    *,
    base_version: int,
    versions: Iterable[VersionView],
    device_id: Any,
    made_before: int | None = None,
    made_as: int | None = None,
) -> bool:
    """Whether anyone but this device wrote the record after the device's base version.

    With ``made_before`` (the change's ledger row, and ``made_as``, its number on the
    device), the device's own writes of mutations made after it count as others': a delete
    applied again after review never saw its writer's later edit. A version the device's push
    wrote as a side effect (a referral's status from an outcome) names no mutation and stays
    the device's own. Versions up to one the device holds whole (``held_version``) it saw.
    """
    versions = list(versions)
    base_version = held_version(
        base_version=base_version, versions=versions, device_id=device_id, made_before=made_before, made_as=made_as
    )
    return any(
        view.version > base_version
        and (view.device_id != device_id or (made_before is not None and _made_after(view, made_before, made_as)))
        for view in versions
    )
