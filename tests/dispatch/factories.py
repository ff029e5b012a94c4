from __future__ import annotations

import importlib
import itertools
from typing import Any

from django.apps import apps as django_apps
from django.utils import timezone

from apps.accounts.models import Program, Role
from apps.dispatch import services
from apps.dispatch.models import Incident, IncidentSource, Priority, ResponseTiming
from tests.accounts.factories import MembershipFactory, UserFactory, device_with_token
from tests.conftest import CrewMember
from tests.teams.factories import UnitFactory

_call_ids = itertools.count(1)


def seed_default_triage_policy() -> None:
    """Run the data migration's seed again: transactional tests flush the tables it filled."""
    migration = importlib.import_module("apps.dispatch.migrations.0002_default_triage_policy")
    migration.seed(django_apps, None)


def make_staff(program: Program, role: Role = Role.DISPATCHER) -> CrewMember:
    """A dispatcher or supervisor signed in on one device (no unit of their own)."""
    user = UserFactory.create()
    MembershipFactory.create(user=user, program=program, role=role)
    device, token = device_with_token(user, name="Console")
    return CrewMember(user, None, device, token)  # type: ignore[arg-type]


def screen(**answers: Any) -> dict[str, Any]:
    """A safety screen: a mental-health call with no safety risk unless told otherwise."""
    base = {
        "mental_health_nexus": True,
        "weapon": False,
        "violence_in_progress": False,
        "imminent_self_harm": False,
        "medical_emergency": False,
    }
    return base | answers


def intake_body(program: Program, **overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "program": program.slug,
        "external_call_id": f"CAD-{next(_call_ids):06d}",
        "source": IncidentSource.CALL_911,
        "priority": Priority.HIGH,
        "location": {"address": "125 W 125th St", "latitude": "40.809000", "longitude": "-73.948000"},
        "callback_number": "+12125550100",
        "nature": "Person shouting in the street, known to outreach workers",
        "safety_screen": screen(),
    }
    return body | overrides


SCREEN_FIELDS = {*screen(), "substance_use", "known_high_risk", "acuity", "hazards"}


def make_incident(program: Program, dispatcher: CrewMember, **fields: Any) -> Incident:
    """An incident taken in through the intake service, triaged by the program's policy."""
    answers = screen(**{key: fields.pop(key) for key in list(fields) if key in SCREEN_FIELDS})
    defaults: dict[str, Any] = {
        "source": IncidentSource.CALL_911,
        "priority": Priority.HIGH,
        "received_at": timezone.now(),
        "address": "1 Main St",
    }
    incident, _created = services.incident_intake(
        program=program,
        actor=dispatcher.user,
        device=dispatcher.device,
        external_call_id=fields.pop("external_call_id", f"CAD-{next(_call_ids):06d}"),
        **(defaults | fields | answers),
    )
    return incident


def fast_timing(program: Program, *, resend: int = 60, escalate: int = 120, checkin: int = 900) -> None:
    for priority in Priority:
        ResponseTiming.objects.update_or_create(
            program=program,
            priority=priority,
            defaults={
                "ack_resend_seconds": resend,
                "ack_escalate_seconds": escalate,
                "checkin_interval_seconds": checkin,
            },
        )


def second_unit(program: Program, **fields: Any) -> Any:
    return UnitFactory.create(program=program, **fields)
