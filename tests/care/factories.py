"""Care records made the way devices make them: pushed through sync by a crew member."""

from __future__ import annotations

import uuid
from typing import Any

from apps.accounts.models import User
from apps.sync import push
from tests.conftest import CrewMember
from tests.sync.helpers import encounter_fields, mutation_ids, now_iso


def pushed(
    member: CrewMember,
    record_type: str,
    fields: dict[str, Any],
    op: str = "create",
    record_id: uuid.UUID | None = None,
    base_version: int | None = None,
    user: User | None = None,
) -> dict[str, Any]:
    """Push one mutation straight through the service (no HTTP) and return its result."""
    record_id = record_id or uuid.uuid4()
    [result] = push.push_mutations(
        device=member.device,
        user=user or member.user,
        mutations=[
            {
                "mutation_id": next(mutation_ids),
                "type": record_type,
                "id": str(record_id),
                "op": op,
                "base_version": base_version,
                "fields": fields,
                "observed_at": now_iso(),
            }
        ],
    ).results
    return result


def encounter(member: CrewMember, **overrides: Any) -> uuid.UUID:
    record_id = uuid.uuid4()
    result = pushed(member, "care.encounter", encounter_fields(member, **overrides), record_id=record_id)
    assert result["status"] == "applied", result
    return record_id
