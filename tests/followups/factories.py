"""Follow-up fixtures made the way the field makes them: encounters and referrals pushed through sync."""

from __future__ import annotations

import uuid
from typing import Any

from apps.accounts.models import Role
from apps.followups.models import CaseManagerAssignment, FollowUpStep
from tests.care.factories import encounter, pushed
from tests.conftest import CrewMember, make_crew_member


def referral(member: CrewMember, *, encounter_fields: dict[str, Any] | None = None, **fields: Any) -> uuid.UUID:
    """Push an ended encounter and a referral from it; returns the referral's id."""
    encounter_id = encounter(
        member, **{"ended_at": "2026-11-20T15:00:00+00:00", "disposition": "referred", **(encounter_fields or {})}
    )
    referral_id = uuid.uuid4()
    values = {"encounter_id": str(encounter_id), "service_type": "outpatient_mental_health", **fields}
    result = pushed(member, "care.referral", values, record_id=referral_id)
    assert result["status"] == "applied", result
    return referral_id


def case_manager(member: CrewMember, *, of_program: bool = True) -> CrewMember:
    """A case manager of the member's program, owning its follow-ups (program-wide assignment)."""
    manager = make_crew_member(member.unit.program, role=Role.CASE_MANAGER)
    manager.user.email = f"{manager.user.username}@example.org"
    manager.user.save(update_fields=["email"])
    if of_program:
        CaseManagerAssignment.objects.create(program=member.unit.program, case_manager=manager.user)
    return manager


def steps_of(referral_id: uuid.UUID) -> list[FollowUpStep]:
    return list(FollowUpStep.objects.filter(plan__encounter__referrals=referral_id).order_by("due_at"))
