"""The JSON shapes of dispatch records, shared by the change feed and the REST API.

Kept out of the API layer so services can put the same shape in the feed that a GET returns.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from decimal import Decimal
from typing import Any

from apps.accounts.models import User
from apps.dispatch import selectors
from apps.dispatch.models import Assignment, AssignmentStatus, EventKind, Incident, SupervisorAlert, TimelineEvent
from apps.teams.models import Unit


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def _coordinate(value: Decimal | None) -> str | None:
    return str(value) if value is not None else None


def _id(value: object) -> str | None:
    return str(value) if value is not None else None


def incident_payload(incident: Incident) -> dict[str, Any]:
    return {
        "id": str(incident.pk),
        "program": _id(incident.program_id),
        "external_call_id": incident.external_call_id,
        "source": incident.source,
        "priority": incident.priority,
        "received_at": _iso(incident.received_at),
        "location": {
            "address": incident.address,
            "zone": _id(incident.zone_id),
            "latitude": _coordinate(incident.latitude),
            "longitude": _coordinate(incident.longitude),
            "accuracy_m": incident.location_accuracy_m,
        },
        "callback_number": incident.callback_number,
        "nature": incident.nature,
        "safety_screen": {**incident.screen_answers(), "hazards": incident.hazards},
        "triage": {
            "recommended_response": incident.recommended_response,
            "reasons": incident.triage_reasons,
            "chosen_response": incident.chosen_response,
            "override_reason": incident.override_reason,
            "eligible": incident.is_eligible,
        },
        "status": incident.status,
        "served_at": _iso(incident.served_at),
        "closed_at": _iso(incident.closed_at),
        "unserved_reason": incident.unserved_reason,
        "unserved_note": incident.unserved_note,
    }


def assignment_payload(assignment: Assignment, *, with_incident: bool = True) -> dict[str, Any]:
    payload: dict[str, Any] = {
        "id": str(assignment.pk),
        "incident_id": str(assignment.incident_id),
        "unit": str(assignment.unit_id),
        "status": assignment.status,
        "is_additional": assignment.is_additional,
        "offered_at": _iso(assignment.offered_at),
        # Past both deadlines while the call waits for a free unit: escalate_due_at is then
        # only when the sweep next looks for one.
        "ack_due_at": None
        if assignment.awaiting_unit_since is not None
        else _iso(assignment.escalate_due_at or assignment.resend_due_at),
        "resend_count": assignment.resend_count,
        "acknowledged_at": _iso(assignment.acknowledged_at),
        "acknowledged_by": _id(assignment.acknowledged_by_id),
        "acknowledged_device": _id(assignment.acknowledged_device_id),
        "checkin_due_at": _iso(assignment.checkin_due_at),
        "last_checkin_at": _iso(assignment.last_checkin_at),
        "ended_at": _iso(assignment.ended_at),
        "end_reason": assignment.end_reason,
        "superseded_by": _id(assignment.superseded_by_id),
    }
    if with_incident:
        payload["incident"] = incident_payload(assignment.incident)
    return payload


# Ended before the crew served it (withdrawn, declined, gone to another unit): the crew no
# longer needs the call's details (P5). The feed tells its devices to drop them.
DROPPED_BY_CREW = frozenset({AssignmentStatus.DECLINED, AssignmentStatus.TIMED_OUT, AssignmentStatus.CANCELLED})


def crew_assignment_payload(assignment: Assignment) -> dict[str, Any]:
    """An assignment as its crew sees it, over the feed and REST alike: the call inside it
    only while it is theirs, or once they served it."""
    return assignment_payload(assignment, with_incident=assignment.status not in DROPPED_BY_CREW)


def assignment_payloads_as_seen_by(user: User, assignments: Iterable[Assignment]) -> list[dict[str, Any]]:
    """Dispatch sees the call in every assignment of its programs; a crew sees it as the feed
    gives it, not once the call was taken from them before they served it (P5)."""
    dispatching = set(selectors.dispatch_programs(user=user).values_list("pk", flat=True))
    return [
        assignment_payload(a) if a.incident.program_id in dispatching else crew_assignment_payload(a)
        for a in assignments
    ]


def unit_payload(unit: Unit) -> dict[str, Any]:
    return {
        "id": str(unit.pk),
        "call_sign": unit.call_sign,
        "response_model": unit.response_model,
        "status": unit.status,
        "status_changed_at": _iso(unit.status_changed_at),
        "home_zone": _id(unit.home_zone_id),
        "latitude": _coordinate(unit.latitude),
        "longitude": _coordinate(unit.longitude),
    }


def alert_payload(alert: SupervisorAlert) -> dict[str, Any]:
    return {
        "id": str(alert.pk),
        "kind": alert.kind,
        "incident": str(alert.incident_id),
        "assignment": _id(alert.assignment_id),
        "unit": _id(alert.unit_id),
        "raised_at": _iso(alert.raised_at),
    }


_KINDS_WITH_A_REASON = frozenset({EventKind.OVERRIDDEN, EventKind.DECLINED, EventKind.CANCELLED})


def event_payload(event: TimelineEvent) -> dict[str, Any]:
    return {
        "id": str(event.pk),
        "kind": event.kind,
        "assignment": _id(event.assignment_id),
        "at": _iso(event.at),
        "observed_at": _iso(event.observed_at),
        "applied": event.applied,
        "actor": _id(event.actor_id),
        "device": _id(event.device_id),
        # The reason is kept sealed beside the codes; the wire keeps it in ``detail``, always
        # for the kinds that give one (an override back to triage gives an empty one).
        "detail": {**event.detail, "reason": event.reason}
        if event.reason or event.kind in _KINDS_WITH_A_REASON
        else event.detail,
    }
