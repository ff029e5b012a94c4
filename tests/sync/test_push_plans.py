"""The push's fixed statements stay index reads of the ledger however PostgreSQL plans them.

They run on the server-bound cursor (apps.common.bulk), so the connection prepares them, and
after five runs PostgreSQL may keep one generic plan for every device: a plan that cannot use
an index for some bound value reads the whole ledger, every device's history, at every push.
"""

from __future__ import annotations

import re
import uuid
from typing import Any

import pytest
from django.db import connection

from apps.common import bulk
from apps.sync.models import Mutation, MutationStatus
from tests.accounts.factories import device_with_token
from tests.conftest import CrewMember
from tests.sync.helpers import SimDevice, encounter_fields

OTHER_DEVICES = 40
ROWS_PER_DEVICE = 150


def fill_ledger_with_other_devices(member: CrewMember) -> None:
    """A ledger as a program's tablets leave it: many devices, each with its applied history."""
    devices = [device_with_token(member.user, name=f"Tablet {n}")[0] for n in range(OTHER_DEVICES)]
    with connection.cursor() as cursor:
        cursor.execute(
            "INSERT INTO sync_mutation (device_id, user_id, mutation_id, payload_hash, record_type, record_id,"
            " operation, payload, observed_at_plausible, client_version, received_at, applied_at, status,"
            " result, error_code)"
            " SELECT d.id, %s, n, md5(d.id::text || n), 'care.encounter', gen_random_uuid(), 'update', '{}',"
            " true, '', now(), now(), %s, '{}', ''"
            " FROM unnest(%s::uuid[]) AS d(id), generate_series(1, %s) AS n",
            [member.user.pk, MutationStatus.APPLIED.value, [device.pk for device in devices], ROWS_PER_DEVICE],
        )
        cursor.execute("ANALYZE sync_mutation")


def recorded_statements(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The statements the push sends through the server-side cursor from now on, as sent."""
    statements: list[str] = []
    run = bulk._ServerCursor.execute

    def recorded(cursor: Any, query: Any, params: Any = None, **options: Any) -> Any:
        statements.append(query)
        return run(cursor, query, params, **options)

    monkeypatch.setattr(bulk._ServerCursor, "execute", recorded)
    return statements


def generic_plan(statement: str) -> str:
    """The plan PostgreSQL would keep for the prepared statement whatever its parameters."""
    numbered = iter(range(1, 1000))
    text = re.sub(r"%[bs]", lambda _placeholder: f"${next(numbered)}", statement).replace("%%", "%")
    with connection.cursor() as cursor:
        cursor.execute("EXPLAIN (GENERIC_PLAN) " + text)
        return "\n".join(line for (line,) in cursor.fetchall())


def test_every_statement_of_a_push_reads_the_ledger_by_index_as_a_generic_plan(
    crew_member: CrewMember, monkeypatch: pytest.MonkeyPatch
) -> None:
    fill_ledger_with_other_devices(crew_member)
    statements = recorded_statements(monkeypatch)
    device = SimDevice(crew_member)
    first = device.mutation("create", "care.encounter", uuid.uuid4(), encounter_fields(crew_member))
    [result] = device.push(first)
    assert result["status"] == "applied"
    # A batch that repeats a stored mutation takes the long way: stored first, then applied.
    second = device.mutation("create", "care.encounter", uuid.uuid4(), encounter_fields(crew_member))
    results = device.push(first, second)
    assert [result["status"] for result in results] == ["duplicate", "applied"]
    assert Mutation.objects.count() == OTHER_DEVICES * ROWS_PER_DEVICE + 2

    ledger_statements = [statement for statement in statements if "sync_mutation" in statement]
    # The push's position, the store of the usual push (with its results) and of the long way,
    # the read of what is left to apply, and the results written over the stored rows.
    assert len({" ".join(statement.split()) for statement in ledger_statements}) == 5
    scans = {
        " ".join(statement.split())[:100]: plan
        for statement in ledger_statements
        if "Seq Scan on sync_mutation" in (plan := generic_plan(statement))
    }
    assert scans == {}


def test_a_push_with_a_create_finds_a_refused_create_of_its_record_by_the_record(
    crew_member: CrewMember, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Whether a create sends again a record whose create the device had refused (it may
    release what waits on it) is read at every push with a create: by the record, through the
    index of quarantined rows by record, never by scanning the user's or everyone's quarantine."""
    fill_ledger_with_other_devices(crew_member)
    with connection.cursor() as cursor:  # a user with much kept for review on other tablets
        cursor.execute("UPDATE sync_mutation SET status = 'quarantined' WHERE mutation_id % 3 = 0")
        cursor.execute("ANALYZE sync_mutation")
    statements = recorded_statements(monkeypatch)
    device = SimDevice(crew_member)

    [result] = device.push(device.mutation("create", "care.encounter", uuid.uuid4(), encounter_fields(crew_member)))

    [position] = [statement for statement in statements if "operation = 'create'" in statement]
    assert result["status"] == "applied"
    assert "mutation_quarantined_record" in generic_plan(position)
