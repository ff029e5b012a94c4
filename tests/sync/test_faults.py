"""Twenty tablets sync overlapping offline edits through a network that drops connections,
while the web process is killed with SIGKILL in the middle of a batch and restarted.

Afterwards the server holds exactly what every device meant to write: every mutation
stored once, every created record once, every field's value either in the record or kept
as a conflict, and every same-field collision recorded as one.
"""

from __future__ import annotations

import contextlib
import os
import random
import signal
import threading
import time
import uuid
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from django.db import connection

from apps.accounts.models import Program
from apps.care.models import ClinicalNote, Encounter
from apps.sync.models import Conflict, Mutation, MutationStatus
from apps.sync.services import device_lock_held
from tests.care.factories import encounter
from tests.conftest import CrewMember, make_crew_member
from tests.live import AsgiServer, asgi_server
from tests.sync.faults import DroppingProxy
from tests.sync.helpers import now_iso

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.live]

DEVICES = 20
RECORDS = 8
NOTES_PER_DEVICE = 3
BIG_BATCH = 200
HEADERS = {"Tandem-Sync-Protocol": "2", "Connection": "close"}


@dataclass
class FieldDevice:
    member: CrewMember
    index: int
    outbox: list[dict[str, Any]] = field(default_factory=list)
    next_id: int = 1
    attempts: int = 0
    results: dict[int, dict[str, Any]] = field(default_factory=dict)

    def queue(self, op: str, record_type: str, record_id: uuid.UUID, fields: dict[str, Any], base: int | None) -> None:
        self.outbox.append(
            {
                "mutation_id": self.next_id,
                "type": record_type,
                "id": str(record_id),
                "op": op,
                "base_version": base,
                "fields": fields,
                "observed_at": now_iso(),
            }
        )
        self.next_id += 1

    def sync(self, base_url: str, batch_size: int, deadline: float) -> None:
        """Push the outbox in order, batch by batch, retrying each batch until it is answered."""
        rng = random.Random(self.index)
        with httpx.Client(timeout=20, headers={**HEADERS, "Authorization": f"Bearer {self.member.token}"}) as client:
            while self.outbox:
                batch = self.outbox[:batch_size]
                while True:
                    assert time.monotonic() < deadline, f"device {self.index} could not sync in time"
                    self.attempts += 1
                    try:
                        response = client.post(f"{base_url}/api/v1/sync/push/", json={"mutations": batch})
                    except httpx.TransportError:
                        time.sleep(rng.uniform(0.02, 0.1))
                        continue
                    if response.status_code >= 500:
                        time.sleep(rng.uniform(0.02, 0.1))
                        continue
                    assert response.status_code == 200, response.text
                    break
                for result in response.json()["results"]:
                    self.results[result["mutation_id"]] = result
                self.outbox = self.outbox[len(batch) :]


@contextlib.contextmanager
def restartable_server(logs: Path) -> Iterator[dict[str, Any]]:
    holder: dict[str, Any] = {}
    with contextlib.ExitStack() as stack:
        holder["stack"] = stack
        holder["server"] = stack.enter_context(asgi_server(logs, name="web-faults"))
        yield holder


def test_twenty_devices_through_a_dropping_network_and_a_killed_server_lose_and_duplicate_nothing(
    program: Program, live_server_logs: Path
) -> None:
    seed = make_crew_member(program)
    unit = seed.unit
    records = [encounter(seed, location=f"seed-{n}", assessment=f"seed-assessment-{n}") for n in range(RECORDS)]
    devices = [FieldDevice(make_crew_member(program, unit=unit), index) for index in range(DEVICES)]
    writes: dict[tuple[uuid.UUID, str], dict[int, str]] = defaultdict(dict)
    notes: dict[uuid.UUID, str] = {}
    for device in devices:
        location_record = records[device.index % RECORDS]
        assessment_record = records[(device.index * 3 + 1) % RECORDS]
        device.queue("update", "care.encounter", location_record, {"location": f"loc-d{device.index}"}, 1)
        writes[(location_record, "location")][device.index] = f"loc-d{device.index}"
        device.queue("update", "care.encounter", assessment_record, {"assessment": f"as-d{device.index}"}, 1)
        writes[(assessment_record, "assessment")][device.index] = f"as-d{device.index}"
        for k in range(NOTES_PER_DEVICE):
            note_id = uuid.uuid4()
            body = f"note d{device.index} #{k}"
            device.queue("create", "care.note", note_id, {"encounter_id": str(location_record), "body": body}, None)
            notes[note_id] = body
    # One device comes back from a long shift offline with a big batch: the server is
    # killed while it applies it.
    big = devices[0]
    for k in range(BIG_BATCH):
        note_id = uuid.uuid4()
        body = f"big batch note #{k}"
        big.queue("create", "care.note", note_id, {"encounter_id": str(records[0]), "body": body}, None)
        notes[note_id] = body
    big_batch_first = big.outbox[-BIG_BATCH]["mutation_id"]

    with restartable_server(live_server_logs) as holder:
        proxy = DroppingProxy(upstream_port=holder["server"].port, seed=4).start()
        killed = threading.Event()
        unapplied_at_kill: list[int] = []

        def kill_mid_batch() -> None:
            try:
                deadline = time.monotonic() + 60
                big_batch = Mutation.objects.filter(device=big.member.device, mutation_id__gte=big_batch_first)
                while time.monotonic() < deadline:
                    # A push of the big device under way (stored and applied in one transaction,
                    # or stored first and being applied) with some of the big batch not applied.
                    if device_lock_held(big.member.device.pk) and (
                        big_batch.exclude(status=MutationStatus.RECEIVED).count() < BIG_BATCH
                    ):
                        server: AsgiServer = holder["server"]
                        os.kill(server.live.process.pid, signal.SIGKILL)
                        server.live.process.wait()
                        unapplied_at_kill.append(BIG_BATCH - big_batch.exclude(status=MutationStatus.RECEIVED).count())
                        holder["server"] = holder["stack"].enter_context(
                            asgi_server(live_server_logs, name="web-faults-restarted")
                        )
                        proxy.upstream_port = holder["server"].port
                        killed.set()
                        return
                    time.sleep(0.002)
            finally:
                connection.close()

        killer = threading.Thread(target=kill_mid_batch)
        killer.start()
        deadline = time.monotonic() + 120
        threads = [
            threading.Thread(
                target=device.sync,
                args=(proxy.url, BIG_BATCH if device is big else 2, deadline),
            )
            for device in devices
        ]
        # The big device first, so the kill lands in its batch; the rest then pile in.
        threads[0].start()
        time.sleep(0.05)
        for thread in threads[1:]:
            thread.start()
        for thread in threads:
            thread.join(timeout=150)
        killer.join(timeout=70)
        proxy.stop()

    assert killed.is_set() and unapplied_at_kill and unapplied_at_kill[0] > 0, "the kill did not land mid-batch"
    # The proxy's own drops happened, answers the server had sent among them, not only what
    # the kill did to connections.
    assert proxy.counts["dropped_before"] > 0 and proxy.counts["answer_dropped"] > 0, proxy.counts
    assert all(not device.outbox for device in devices)
    # A batch committed and never answered was sent again and recognised, and every device
    # was answered for every mutation it made, with the version the ledger keeps.
    answered = [result for device in devices for result in device.results.values()]
    assert any(result["status"] == "duplicate" for result in answered)
    for device in devices:
        assert sorted(device.results) == list(range(1, device.next_id))
        ledger = dict(Mutation.objects.filter(device=device.member.device).values_list("mutation_id", "result"))
        for mutation_id, result in device.results.items():
            assert result["status"] in {"applied", "conflict", "duplicate"}, result
            assert result["version"] == ledger[mutation_id]["version"], (result, ledger[mutation_id])

    # Every mutation stored exactly once, none left unapplied.
    for device in devices:
        stored = Mutation.objects.filter(device=device.member.device)
        assert stored.count() == device.next_id - 1
        assert not stored.filter(status__in=[MutationStatus.RECEIVED, MutationStatus.QUARANTINED]).exists()
    # Every note created once, with its text.
    assert dict(ClinicalNote.objects.values_list("id", "body")) == notes
    # Every field: one writer's value stands, every other writer's value is kept as a conflict.
    for (record_id, field_name), values in writes.items():
        current = getattr(Encounter.objects.get(pk=record_id), field_name)
        conflicts = Conflict.objects.filter(record_id=record_id, field=field_name, kind="same_field")
        kept = sorted(str(value) for value in conflicts.values_list("device_value", flat=True))
        assert current in values.values()
        assert sorted([current, *kept]) == sorted(values.values())
        assert conflicts.count() == len(values) - 1
        assert set(conflicts.values_list("server_value", flat=True)) <= {current}
    applied = Mutation.objects.filter(status=MutationStatus.APPLIED, operation="update").count()
    assert applied == len(writes)
    assert Mutation.objects.filter(status=MutationStatus.CONFLICT).count() == sum(len(v) - 1 for v in writes.values())
    print(
        f"proxy: {proxy.counts}; unapplied at kill: {unapplied_at_kill}; attempts: {sum(d.attempts for d in devices)}"
    )
