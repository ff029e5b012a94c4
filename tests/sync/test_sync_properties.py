"""A Hypothesis state machine over the sync domain functions (no HTTP).

Devices edit and delete shared records offline, sync (sometimes losing the answer and
sending the same batch again), replay old batches, and pull. After every step:

- nothing is lost: every value a device pushed is the record's value, or kept in a
  conflict, or was replaced by a device that had that value in front of it when it edited;
- a delete destroys nothing it had not seen: a record is only ever soft-deleted, and once
  deleted, every value pushed to it was in front of a device when it deleted or edited, or
  is kept in a conflict;
- a conflict is a real collision of two writers: it keeps the device's own value, which it
  changed from its base, beside the server's, which changed since; and an edit answered
  as applied is the record's value at the version it names (every value written is new);
- nothing is doubled: one ledger row per mutation sent, none left unapplied, and a replayed
  batch returns the stored results and writes nothing.
"""

from __future__ import annotations

import itertools
import uuid
from dataclasses import dataclass, field
from typing import Any

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule, run_state_machine_as_test

from apps.care.models import Encounter
from apps.sync import push, selectors
from apps.sync.models import Conflict, Mutation, MutationStatus, RecordVersion
from apps.sync.scopes import scopes_for_user
from tests.accounts.factories import ProgramFactory
from tests.conftest import CrewMember, make_crew_member
from tests.sync.helpers import encounter_fields, now_iso

pytestmark = pytest.mark.django_db(transaction=True)

FIELDS = ("location", "assessment")
DEVICES = 3
RECORDS = 2
values = itertools.count()


@dataclass
class Tablet:
    member: CrewMember
    next_id: int = 1
    cursor: str | None = None
    versions: dict[uuid.UUID, int] = field(default_factory=dict)
    local: dict[tuple[uuid.UUID, str], Any] = field(default_factory=dict)
    # Records this device no longer shows: deleted here, or removed by the feed.
    hidden: set[uuid.UUID] = field(default_factory=set)
    outbox: list[dict[str, Any]] = field(default_factory=list)
    last_batch: list[dict[str, Any]] = field(default_factory=list)
    last_results: list[dict[str, Any]] = field(default_factory=list)
    sent: set[int] = field(default_factory=set)  # the mutation ids it pushed

    def push(self, batch: list[dict[str, Any]]) -> list[dict[str, Any]]:
        self.sent |= {mutation["mutation_id"] for mutation in batch}
        return push.push_mutations(device=self.member.device, user=self.member.user, mutations=batch).results

    def take(self, record_id: uuid.UUID, data: dict[str, Any], version: int) -> None:
        """Apply a record from the server, as a client does: fields with an edit still in the
        outbox keep the local value (it is pushed later and merged by the server)."""
        if version >= self.versions.get(record_id, 0):
            self.versions[record_id] = version
            self.hidden.discard(record_id)
            pending = {
                name for mutation in self.outbox if mutation["id"] == str(record_id) for name in mutation["fields"]
            }
            for name in FIELDS:
                if name not in pending:
                    self.local[(record_id, name)] = data[name]


class SyncMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        program = ProgramFactory.create()
        first = make_crew_member(program)
        self.tablets = [Tablet(first)] + [
            Tablet(make_crew_member(program, unit=first.unit)) for _ in range(DEVICES - 1)
        ]
        self.records: list[uuid.UUID] = []
        creator = self.tablets[0]
        for n in range(RECORDS):
            record_id = uuid.uuid4()
            fields = encounter_fields(first, location=f"start-{n}", assessment="")
            [result] = creator.push([self._mutation(creator, "create", record_id, fields, None)])
            assert result["status"] == "applied"
            self.records.append(record_id)
        for tablet in self.tablets:
            self._pull(tablet)
        # Every value pushed, and every value a device had in front of it when it edited.
        self.pushed: set[tuple[uuid.UUID, str, Any]] = set()
        self.seen_when_editing: set[tuple[uuid.UUID, str, Any]] = set()
        # Every value a device had in front of it when it deleted the record.
        self.seen_when_deleting: set[tuple[uuid.UUID, str, Any]] = set()

    def _mutation(
        self, tablet: Tablet, op: str, record_id: uuid.UUID, fields: dict[str, Any], base: int | None
    ) -> dict[str, Any]:
        mutation = {
            "mutation_id": tablet.next_id,
            "type": "care.encounter",
            "id": str(record_id),
            "op": op,
            "base_version": base,
            "fields": fields,
            "observed_at": now_iso(),
        }
        tablet.next_id += 1
        return mutation

    def _pull(self, tablet: Tablet) -> None:
        scopes = scopes_for_user(tablet.member.user)
        while True:
            page = selectors.feed_page(scopes=scopes, cursor=tablet.cursor, reader_device_id=tablet.member.device.pk)
            for entry in page.entries:
                if entry.operation == "upsert" and entry.version is not None:
                    tablet.take(entry.record_id, entry.data, entry.version)
                elif entry.operation == "remove" and entry.version is not None:
                    tablet.versions[entry.record_id] = max(entry.version, tablet.versions.get(entry.record_id, 0))
                    tablet.hidden.add(entry.record_id)
            tablet.cursor = page.position.encode(tablet.member.device.pk)
            if not page.has_more:
                return

    @rule(device=st.integers(0, DEVICES - 1), record=st.integers(0, RECORDS - 1), name=st.sampled_from(FIELDS))
    def edit_offline(self, device: int, record: int, name: str) -> None:
        tablet, record_id = self.tablets[device], self.records[record]
        if record_id in tablet.hidden:
            return
        value = f"v{next(values)}"
        self.seen_when_editing.add((record_id, name, tablet.local.get((record_id, name))))
        tablet.local[(record_id, name)] = value
        tablet.outbox.append(self._mutation(tablet, "update", record_id, {name: value}, tablet.versions.get(record_id)))

    @rule(device=st.integers(0, DEVICES - 1), record=st.integers(0, RECORDS - 1))
    def delete_offline(self, device: int, record: int) -> None:
        tablet, record_id = self.tablets[device], self.records[record]
        if record_id in tablet.hidden:
            return
        for name in FIELDS:
            self.seen_when_deleting.add((record_id, name, tablet.local.get((record_id, name))))
        tablet.hidden.add(record_id)
        tablet.outbox.append(self._mutation(tablet, "delete", record_id, {}, tablet.versions.get(record_id)))

    @precondition(lambda self: any(tablet.outbox for tablet in self.tablets))
    @rule(device=st.integers(0, DEVICES - 1), answer_lost=st.booleans())
    def sync(self, device: int, answer_lost: bool) -> None:
        tablet = self.tablets[device]
        if not tablet.outbox:
            return
        batch = list(tablet.outbox)
        results = tablet.push(batch)
        for mutation in batch:
            for name, value in mutation["fields"].items():
                self.pushed.add((uuid.UUID(mutation["id"]), name, value))
        if answer_lost:
            return  # the server applied it; the device never heard and will send it again
        tablet.outbox = []
        tablet.last_batch, tablet.last_results = batch, results
        for mutation, result in zip(batch, results, strict=True):
            assert result["status"] in ("applied", "conflict", "duplicate"), result
            if result["status"] == "applied" and mutation["op"] == "update":
                # Every value an edit writes is new: applied, it is the record's at that version.
                assert {name: result["data"][name] for name in mutation["fields"]} == mutation["fields"], result
            if result.get("data") and result["status"] != "conflict" and mutation["op"] != "delete":
                tablet.take(uuid.UUID(result["id"]), result["data"], result["version"])
        self._pull(tablet)

    @precondition(lambda self: any(tablet.last_batch for tablet in self.tablets))
    @rule(device=st.integers(0, DEVICES - 1))
    def replay_an_old_batch(self, device: int) -> None:
        tablet = self.tablets[device]
        if not tablet.last_batch:
            return
        before = (RecordVersion.objects.count(), Conflict.objects.count(), Mutation.objects.count())
        again = tablet.push(tablet.last_batch)
        assert [r["status"] for r in again] == ["duplicate"] * len(again)
        assert [r["version"] for r in again] == [r["version"] for r in tablet.last_results]
        assert (RecordVersion.objects.count(), Conflict.objects.count(), Mutation.objects.count()) == before

    @rule(device=st.integers(0, DEVICES - 1))
    def pull(self, device: int) -> None:
        self._pull(self.tablets[device])

    @invariant()
    def nothing_is_lost(self) -> None:
        current = {
            (encounter.pk, name): getattr(encounter, name)
            for encounter in Encounter.objects.filter(pk__in=self.records)
            for name in FIELDS
        }
        kept = set()
        for conflict in Conflict.objects.filter(record_id__in=self.records):
            kept.add((conflict.record_id, conflict.field, conflict.device_value))
            kept.add((conflict.record_id, conflict.field, conflict.server_value))
        for record_id, name, value in self.pushed:
            assert (
                current[(record_id, name)] == value
                or (record_id, name, value) in kept
                or (record_id, name, value) in self.seen_when_editing
            ), f"{name}={value!r} of {record_id} was lost"

    @invariant()
    def a_delete_destroys_nothing_it_had_not_seen(self) -> None:
        records = {encounter.pk: encounter for encounter in Encounter.objects.filter(pk__in=self.records)}
        assert set(records) == set(self.records), "a clinical record was hard-deleted"
        kept = set()
        for conflict in Conflict.objects.filter(record_id__in=self.records):
            kept.add((conflict.record_id, conflict.field, conflict.device_value))
            kept.add((conflict.record_id, conflict.field, conflict.server_value))
        for record_id, name, value in self.pushed:
            if records[record_id].is_deleted:
                assert (
                    (record_id, name, value) in self.seen_when_deleting
                    or (record_id, name, value) in self.seen_when_editing
                    or (record_id, name, value) in kept
                ), f"{name}={value!r} of {record_id} was deleted by a device that had not seen it"

    @invariant()
    def every_conflict_is_a_real_collision(self) -> None:
        for conflict in Conflict.objects.filter(record_id__in=self.records).select_related("mutation"):
            sent = conflict.mutation.payload["fields"]
            if conflict.kind == "same_field":
                assert conflict.device_value == sent[conflict.field], "a conflict keeps another's value as the device's"
                assert conflict.device_value != conflict.server_value
                if conflict.base_value is not None:
                    # Both changed it since the base: else one side's value simply applies.
                    assert conflict.base_value not in (conflict.server_value, conflict.device_value)
            elif conflict.kind == "edit_vs_delete":
                assert conflict.device_value == sent[conflict.field]

    @invariant()
    def nothing_is_doubled_or_stuck(self) -> None:
        for tablet in self.tablets:
            stored = Mutation.objects.filter(device=tablet.member.device)
            assert set(stored.values_list("mutation_id", flat=True)) == tablet.sent
            assert not stored.filter(status__in=[MutationStatus.RECEIVED, MutationStatus.QUARANTINED]).exists()


def test_sync_loses_and_doubles_nothing() -> None:
    run_state_machine_as_test(
        SyncMachine,
        settings=settings(
            max_examples=25,
            stateful_step_count=20,
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
        ),
    )
