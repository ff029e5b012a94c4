"""Test helpers: a device that pushes and pulls over the API the way a mobile client does."""

from __future__ import annotations

import contextlib
import itertools
import threading
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from rest_framework.test import APIClient

from tests.conftest import CrewMember

PROTOCOL = {"HTTP_TANDEM_SYNC_PROTOCOL": "2", "HTTP_TANDEM_CLIENT_VERSION": "tandem-test/1.0"}


# One increasing source of mutation ids for every helper, so a device's ids keep rising
# whichever helper pushes for it.
mutation_ids = itertools.count(1_000_000)


# An id as UUID() also reads it, though the server never writes it so: a device that sent it
# would get the record back under another id than its own.
OTHER_SPELLINGS: dict[str, Callable[[uuid.UUID], str]] = {
    "uppercase": lambda record_id: str(record_id).upper(),
    "braces": lambda record_id: f"{{{record_id}}}",
    "urn": lambda record_id: f"urn:uuid:{record_id}",
    "undashed": lambda record_id: record_id.hex,
}
respelt = pytest.mark.parametrize("respell", OTHER_SPELLINGS.values(), ids=OTHER_SPELLINGS.keys())


def sync_client(member: CrewMember) -> APIClient:
    """An API client of the member's device speaking sync protocol 2."""
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {member.token}", **PROTOCOL)
    return client


def now_iso() -> str:
    return datetime.now(UTC).isoformat()


@dataclass
class SimDevice:
    """A member's device with an outbox and a mutation counter."""

    member: CrewMember
    next_mutation_id: int = 1
    outbox: list[dict[str, Any]] = field(default_factory=list)

    def client(self) -> APIClient:
        return sync_client(self.member)

    def mutation(
        self,
        op: str,
        record_type: str,
        record_id: uuid.UUID | str,
        fields: dict[str, Any] | None = None,
        base_version: int | None = None,
    ) -> dict[str, Any]:
        mutation_id = max(self.next_mutation_id, next(mutation_ids))
        mutation = {
            "mutation_id": mutation_id,
            "type": record_type,
            "id": str(record_id),
            "op": op,
            "base_version": base_version,
            "fields": fields or {},
            "observed_at": now_iso(),
        }
        self.next_mutation_id = mutation_id + 1
        return mutation

    def push(self, *mutations: dict[str, Any], expect: int = 200) -> list[dict[str, Any]]:
        response = self.client().post("/api/v1/sync/push/", {"mutations": list(mutations)}, format="json")
        assert response.status_code == expect, response.content
        results: list[dict[str, Any]] = response.json().get("results", [])
        return results

    def pull(self, cursor: str | None = None) -> tuple[list[dict[str, Any]], str]:
        entries: list[dict[str, Any]] = []
        while True:
            params = {"cursor": cursor} if cursor else {}
            response = self.client().get("/api/v1/sync/feed/", params)
            assert response.status_code == 200, response.content
            body = response.json()
            entries += body["entries"]
            cursor = body["cursor"]
            if not body["has_more"]:
                return entries, cursor


def encounter_fields(member: CrewMember, **overrides: Any) -> dict[str, Any]:
    fields: dict[str, Any] = {
        "unit_id": str(member.unit.pk),
        "started_at": "2026-11-20T14:05:00+00:00",
        "location": "125th St & Lexington Ave",
        "assessment": "",
        "disposition": "",
    }
    if "ended_at" in overrides and "started_at" not in overrides and isinstance(overrides["ended_at"], str):
        # An encounter ends after it starts: one ended at a time a test chose began an hour before, at the latest.
        ended = datetime.fromisoformat(overrides["ended_at"]) - timedelta(hours=1)
        fields["started_at"] = min(ended, datetime.fromisoformat(fields["started_at"])).isoformat()
    fields.update(overrides)
    return fields


def run_while_another_writer_holds(
    record_id: uuid.UUID, edit: Callable[[], None], action: Callable[[], Any], *, edit_once_waited: bool = False
) -> tuple[Any, bool]:
    """Run ``action`` in a thread of its own while another transaction, having made ``edit``
    of the record under its lock, holds that lock; then let that transaction commit.

    With ``edit_once_waited``, the other transaction takes the lock having written nothing,
    and makes ``edit`` once ``action`` has waited for the lock: its transaction id, taken at
    its first write, is younger than any ``action`` took before it waited.

    Returns what ``action`` returned, and whether it waited for the lock. Each thread has its
    own database connection, as two requests would.
    """
    from django.db import connection, transaction

    from apps.sync.services import lock_records

    edited, release = threading.Event(), threading.Event()
    returned: list[Any] = []
    faults: list[BaseException] = []

    def other_writer() -> None:
        try:
            with transaction.atomic():
                lock_records([record_id])
                if not edit_once_waited:
                    edit()
                edited.set()
                release.wait(10)
                if edit_once_waited:
                    edit()
        except BaseException as fault:  # noqa: BLE001 - re-raised in the test's own thread
            faults.append(fault)
            edited.set()
        finally:
            connection.close()

    def act() -> None:
        try:
            returned.append(action())
        except BaseException as fault:  # noqa: BLE001 - re-raised in the test's own thread
            faults.append(fault)
        finally:
            connection.close()

    writer = threading.Thread(target=other_writer)
    writer.start()
    assert edited.wait(10), "the other writer never took the lock"
    actor = threading.Thread(target=act)
    actor.start()
    actor.join(1)
    waited = actor.is_alive()
    release.set()
    writer.join(30)
    actor.join(30)
    assert not writer.is_alive() and not actor.is_alive(), "the two writers deadlocked"
    if faults:
        raise faults[0]
    return returned[0], waited


@contextlib.contextmanager
def younger_writes_before_the_catch_up(monkeypatch: pytest.MonkeyPatch, write: Callable[[], None]) -> Iterator[None]:
    """Within this block, a change of access runs ``write`` in a transaction of its own once
    it has waited for the older writers: younger than the change, committed before the
    change reads its catch-up."""
    from django.db import connection

    from apps.sync import services

    wait = services._wait_for_older_writers

    def write_in_own_connection() -> None:
        try:
            write()
        finally:
            connection.close()

    def wait_then_write() -> None:
        wait()
        writer = threading.Thread(target=write_in_own_connection)
        writer.start()
        writer.join(timeout=30)
        assert not writer.is_alive(), "the younger write never ended"

    monkeypatch.setattr(services, "_wait_for_older_writers", wait_then_write)
    try:
        yield
    finally:
        monkeypatch.setattr(services, "_wait_for_older_writers", wait)


def stored_unapplied(member: CrewMember, mutations: list[dict[str, Any]]) -> None:
    """What a push leaves when the server dies between storing its batch and applying it:
    the mutations in the ledger, received, none applied."""
    from apps.sync import push

    push._store(
        device=member.device,
        user=member.user,
        envelopes=[push.parse_envelope(mutation, index) for index, mutation in enumerate(mutations)],
        client_version="",
        results={},
        keyed_by_content=False,
    )
