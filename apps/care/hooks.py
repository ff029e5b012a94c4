"""Hooks: how apps above care react to what happens to care records, without care knowing them.

Follow-ups plan contacts when an encounter ends or a referral is made, closes steps when a
referral's outcome is recorded, and moves its plan and steps with an encounter reassigned to
another unit (auditing each health record it moves, with the accessor care passes). Care
calls the registered functions explicitly, inside the writing transaction, after its own
write (no Django signals: the call is visible here).
A hook must not raise for a rule of its own; whatever it writes commits or rolls back with care's.

Synced records of those apps that hang under an encounter and carry its unit (follow-ups'
contact attempts) are named to care by a finder instead: care locks, moves and publishes them
with its own records when the encounter is reassigned. The records such a record is created
under (follow-up steps) are named by another finder: the move takes their locks, as the
create does, so a record created while the encounter moves is moved with it or placed after.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any
from uuid import UUID

from apps.accounts.models import User
from apps.care.models import CareRecord, Encounter

Hook = Callable[..., None]
# Returns (synced type name, record) for each record of an app above care under the encounter.
RecordFinder = Callable[[Encounter], Iterable[tuple[str, CareRecord]]]

_hooks: dict[str, list[Hook]] = {
    "encounter_saved": [],
    "encounter_reassigned": [],
    "referral_saved": [],
    "outcome_recorded": [],
}
_record_finders: list[RecordFinder] = []
# Returns the ids of records of an app above care under the encounter that devices create
# synced records under (follow-up steps take contact attempts).
PlaceFinder = Callable[[Encounter], Iterable[UUID]]
_place_finders: list[PlaceFinder] = []


def register(event: str, hook: Hook) -> None:
    """Register ``hook`` for ``event`` (once; a second registration of the same function is ignored)."""
    if hook not in _hooks[event]:
        _hooks[event].append(hook)


def run(event: str, record: Any, *, actor: User | None, **context: Any) -> None:
    """Call the event's hooks. Each passes ``accessor`` too (None where no one audits the
    write, a write of the system's): a hook audits the records it writes, or moves, as the
    writes of the change that set it off (P8), as care audits its own."""
    for hook in _hooks[event]:
        hook(record, actor=actor, **context)


def register_records_under_encounter(finder: RecordFinder) -> None:
    """Register ``finder`` (once) for the synced records that move with a reassigned encounter."""
    if finder not in _record_finders:
        _record_finders.append(finder)


def records_under_encounter(encounter: Encounter) -> list[tuple[str, CareRecord]]:
    return [found for finder in _record_finders for found in finder(encounter)]


def register_places_under_encounter(finder: PlaceFinder) -> None:
    """Register ``finder`` (once) for the records under an encounter that synced records are
    created under: a move of the encounter takes their locks, as such a create does, so the
    create is either found by the move or reads the new unit."""
    if finder not in _place_finders:
        _place_finders.append(finder)


def places_under_encounter(encounter: Encounter) -> list[UUID]:
    return [found for finder in _place_finders for found in finder(encounter)]
