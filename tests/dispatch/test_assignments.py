from __future__ import annotations

import uuid
from datetime import timedelta
from decimal import Decimal
from typing import Any

import pytest
from django.db import IntegrityError, transaction
from django.utils import timezone

from apps.accounts.models import Program
from apps.common.api.errors import DomainError
from apps.dispatch import selectors, services
from apps.dispatch.models import Assignment, AssignmentStatus, Incident, UnservedReason
from apps.dispatch.services import END_REASON_MAX_LENGTH
from apps.teams.models import ResponseModel, Unit, UnitStatus
from tests.accounts.factories import device_with_token
from tests.conftest import CrewMember, make_crew_member
from tests.dispatch.concurrency import record_key, run_until_done_or_blocked
from tests.dispatch.factories import make_incident, make_staff
from tests.teams.factories import UnitFactory, ZoneFactory


def offer(dispatcher: CrewMember, incident: Incident, unit: Unit, **extra: Any) -> dict[str, Any]:
    response = dispatcher.client().post(
        f"/api/v1/dispatch/incidents/{incident.pk}/assignments/", {"unit": str(unit.pk), **extra}, format="json"
    )
    assert response.status_code == 201, response.json()
    body: dict[str, Any] = response.json()
    return body


def post(member: CrewMember, assignment_id: object, action: str, body: dict[str, Any] | None = None) -> Any:
    return member.client().post(f"/api/v1/dispatch/assignments/{assignment_id}/{action}/", body or {}, format="json")


def test_offering_marks_the_unit_assigned_and_sets_ack_deadlines(
    program: Program, dispatcher: CrewMember, crew_member: CrewMember
) -> None:
    incident = make_incident(program, dispatcher)

    body = offer(dispatcher, incident, crew_member.unit)

    assignment = Assignment.objects.get(pk=body["id"])
    crew_member.unit.refresh_from_db()
    assert assignment.status == AssignmentStatus.OFFERED and assignment.offered_by == dispatcher.user
    assert crew_member.unit.status == UnitStatus.ASSIGNED
    assert assignment.resend_due_at is not None and assignment.escalate_due_at is not None
    assert (assignment.escalate_due_at - assignment.resend_due_at) == timedelta(seconds=60)


def test_a_unit_holds_one_active_assignment_unless_explicitly_added(
    program: Program, dispatcher: CrewMember, crew_member: CrewMember
) -> None:
    first, second = make_incident(program, dispatcher), make_incident(program, dispatcher)
    offer(dispatcher, first, crew_member.unit)

    refused = dispatcher.client().post(
        f"/api/v1/dispatch/incidents/{second.pk}/assignments/", {"unit": str(crew_member.unit.pk)}, format="json"
    )
    added = offer(dispatcher, second, crew_member.unit, additional=True)

    assert refused.status_code == 409 and refused.json()["code"] == "unit_busy"
    assert added["is_additional"] is True
    assert Assignment.objects.filter(unit=crew_member.unit).count() == 2


def test_the_database_enforces_one_active_assignment_per_unit(
    program: Program, dispatcher: CrewMember, crew_member: CrewMember
) -> None:
    first, second = make_incident(program, dispatcher), make_incident(program, dispatcher)
    Assignment.objects.create(incident=first, unit=crew_member.unit)

    with pytest.raises(IntegrityError), transaction.atomic():
        Assignment.objects.create(incident=second, unit=crew_member.unit)


def test_recommendation_is_available_units_of_the_model_nearest_first_then_zone(
    program: Program, dispatcher: CrewMember
) -> None:
    zone = ZoneFactory.create(program=program)
    far = UnitFactory.create(program=program, call_sign="FAR", latitude=Decimal("40.90"), longitude=Decimal("-73.90"))
    near = UnitFactory.create(program=program, call_sign="NEAR", latitude=Decimal("40.81"), longitude=Decimal("-73.95"))
    in_zone = UnitFactory.create(program=program, call_sign="ZONE", home_zone=zone)
    UnitFactory.create(program=program, call_sign="NOPOS")
    UnitFactory.create(program=program, call_sign="BUSY", status=UnitStatus.OUT_OF_SERVICE)
    UnitFactory.create(program=program, call_sign="COMM", response_model=ResponseModel.COMMUNITY_RESPONSE)
    incident = make_incident(program, dispatcher, latitude=Decimal("40.809"), longitude=Decimal("-73.948"), zone=zone)

    response = dispatcher.client().get(f"/api/v1/dispatch/incidents/{incident.pk}/recommended-units/")

    assert [row["call_sign"] for row in response.json()["units"]] == ["NEAR", "FAR", "ZONE", "NOPOS"]
    assert response.json()["units"][0]["distance_km"] < 1 < response.json()["units"][1]["distance_km"]
    assert [r.unit.pk for r in selectors.recommended_units(incident=incident)][:3] == [near.pk, far.pk, in_zone.pk]


def test_unit_board_shows_status_and_time_in_status(
    program: Program, dispatcher: CrewMember, crew_member: CrewMember
) -> None:
    incident = make_incident(program, dispatcher)
    body = offer(dispatcher, incident, crew_member.unit)

    board = dispatcher.client().get("/api/v1/dispatch/board/", {"program": program.slug}).json()["units"]

    (row,) = board
    assert (row["call_sign"], row["status"]) == (crew_member.unit.call_sign, "assigned")
    assert 0 <= row["seconds_in_status"] < 5
    assert row["active_assignments"] == [{"id": body["id"], "incident": str(incident.pk), "status": "offered"}]


def test_acknowledgement_is_first_wins_and_idempotent(
    program: Program, dispatcher: CrewMember, crew_member: CrewMember
) -> None:
    partner = make_crew_member(program, unit=crew_member.unit)
    body = offer(dispatcher, make_incident(program, dispatcher), crew_member.unit)

    first = post(crew_member, body["id"], "acknowledge")
    retried = post(crew_member, body["id"], "acknowledge")
    second_member = post(partner, body["id"], "acknowledge")

    assert first.status_code == retried.status_code == second_member.status_code == 200
    assert first.json() == retried.json() == second_member.json()
    assert first.json()["acknowledged_by"] == str(crew_member.user.pk)
    assert first.json()["acknowledged_device"] == str(crew_member.device.pk)
    assignment = Assignment.objects.get(pk=body["id"])
    assert assignment.timeline.filter(kind="acknowledged").count() == 1
    assert assignment.resend_due_at is None and assignment.escalate_due_at is None


def test_crew_moves_the_assignment_along_and_the_unit_follows(
    program: Program, dispatcher: CrewMember, crew_member: CrewMember
) -> None:
    body = offer(dispatcher, make_incident(program, dispatcher), crew_member.unit)
    post(crew_member, body["id"], "acknowledge")
    seen: list[tuple[str, str]] = []

    for status in ("en_route", "on_scene", "transporting", "cleared"):
        response = post(crew_member, body["id"], "status", {"status": status})
        assert response.status_code == 200, response.json()
        crew_member.unit.refresh_from_db()
        seen.append((response.json()["status"], crew_member.unit.status))

    assert seen == [
        ("en_route", "en_route"),
        ("on_scene", "on_scene"),
        ("transporting", "transporting"),
        ("cleared", "available"),
    ]
    assignment = Assignment.objects.select_related("incident").get(pk=body["id"])
    assert assignment.incident.served_at is not None and assignment.ended_at is not None


def test_status_before_acknowledgement_is_refused(
    program: Program, dispatcher: CrewMember, crew_member: CrewMember
) -> None:
    body = offer(dispatcher, make_incident(program, dispatcher), crew_member.unit)

    response = post(crew_member, body["id"], "status", {"status": "en_route"})

    assert response.status_code == 409 and response.json()["code"] == "not_acknowledged"
    assert Assignment.objects.get(pk=body["id"]).status == AssignmentStatus.OFFERED


def test_offline_recorded_updates_keep_device_time_and_server_order(
    program: Program, dispatcher: CrewMember, crew_member: CrewMember
) -> None:
    partner = make_crew_member(program, unit=crew_member.unit)
    body = offer(dispatcher, make_incident(program, dispatcher), crew_member.unit)
    post(crew_member, body["id"], "acknowledge")
    on_scene_at = timezone.now() - timedelta(seconds=20)
    en_route_at = timezone.now() - timedelta(seconds=40)

    on_scene = post(crew_member, body["id"], "status", {"status": "on_scene", "observed_at": on_scene_at.isoformat()})
    # The partner's phone was in a basement: its "en route" arrives after "on scene".
    late = post(partner, body["id"], "status", {"status": "en_route", "observed_at": en_route_at.isoformat()})

    assert on_scene.json()["applied"] is True and late.json()["applied"] is False
    assert late.json()["status"] == "on_scene"
    events = list(
        Assignment.objects.get(pk=body["id"]).timeline.order_by("at").values_list("kind", "observed_at", "applied")
    )
    assert events[-2:] == [("on_scene", on_scene_at, True), ("en_route", en_route_at, False)]


def test_a_retried_status_update_applies_once(
    program: Program, dispatcher: CrewMember, crew_member: CrewMember
) -> None:
    body = offer(dispatcher, make_incident(program, dispatcher), crew_member.unit)
    post(crew_member, body["id"], "acknowledge")
    update = {"status": "en_route", "event_id": str(uuid.uuid4())}

    first = post(crew_member, body["id"], "status", update)
    retry = post(crew_member, body["id"], "status", update)

    assert first.json() == retry.json()
    assert Assignment.objects.get(pk=body["id"]).timeline.filter(kind="en_route").count() == 1


@pytest.mark.parametrize(
    ("observed", "code"),
    [
        (timedelta(hours=1), "time_in_future"),
        (-timedelta(hours=30), "time_too_old"),
        (-timedelta(hours=2), "time_before_offer"),
    ],
)
def test_implausible_device_times_are_refused_naming_the_field(
    program: Program, dispatcher: CrewMember, crew_member: CrewMember, observed: timedelta, code: str
) -> None:
    body = offer(dispatcher, make_incident(program, dispatcher), crew_member.unit)
    post(crew_member, body["id"], "acknowledge")

    response = post(
        crew_member,
        body["id"],
        "status",
        {"status": "en_route", "observed_at": (timezone.now() + observed).isoformat()},
    )

    assert response.status_code == 400
    assert (response.json()["code"], response.json()["errors"][0]["field"]) == (code, "observed_at")
    assert Assignment.objects.get(pk=body["id"]).status == AssignmentStatus.ACKNOWLEDGED


def test_a_device_time_without_its_utc_offset_is_refused_naming_the_field(
    program: Program, dispatcher: CrewMember, crew_member: CrewMember
) -> None:
    body = offer(dispatcher, make_incident(program, dispatcher), crew_member.unit)
    post(crew_member, body["id"], "acknowledge")
    # Plausible in every other way: it would be taken as this very moment in the server's zone.
    without_offset = timezone.localtime().replace(tzinfo=None).isoformat()

    response = post(crew_member, body["id"], "status", {"status": "en_route", "observed_at": without_offset})

    assert response.status_code == 400
    assert response.json()["errors"][0]["field"] == "observed_at"
    assert Assignment.objects.get(pk=body["id"]).status == AssignmentStatus.ACKNOWLEDGED


def test_decline_with_reason_offers_the_next_unit(
    program: Program, dispatcher: CrewMember, crew_member: CrewMember
) -> None:
    other = UnitFactory.create(program=program)
    incident = make_incident(program, dispatcher)
    body = offer(dispatcher, incident, crew_member.unit)

    missing = post(crew_member, body["id"], "decline", {})
    declined = post(crew_member, body["id"], "decline", {"reason": "Vehicle breakdown"})

    assert missing.status_code == 400 and missing.json()["errors"][0]["field"] == "reason"
    assert declined.json()["status"] == "declined" and declined.json()["end_reason"] == "Vehicle breakdown"
    assert Assignment.objects.get(incident=incident, status=AssignmentStatus.OFFERED).unit == other


def test_check_in_on_scene_moves_the_next_deadline(
    program: Program, dispatcher: CrewMember, crew_member: CrewMember
) -> None:
    body = offer(dispatcher, make_incident(program, dispatcher), crew_member.unit)
    post(crew_member, body["id"], "acknowledge")
    too_early = post(crew_member, body["id"], "check-in")
    post(crew_member, body["id"], "status", {"status": "on_scene"})
    due_before = Assignment.objects.get(pk=body["id"]).checkin_due_at

    response = post(crew_member, body["id"], "check-in")

    assert too_early.status_code == 409 and too_early.json()["code"] == "not_on_scene"
    assert response.status_code == 200
    assignment = Assignment.objects.get(pk=body["id"])
    assert assignment.last_checkin_at is not None and assignment.checkin_due_at >= due_before  # type: ignore[operator]
    assert assignment.checkin_due_at - assignment.last_checkin_at == timedelta(minutes=15)  # type: ignore[operator]


def test_dispatcher_cancels_and_the_unit_is_free_again(
    program: Program, dispatcher: CrewMember, crew_member: CrewMember
) -> None:
    body = offer(dispatcher, make_incident(program, dispatcher), crew_member.unit)

    response = post(dispatcher, body["id"], "cancel", {"reason": "Caller called back: resolved"})

    crew_member.unit.refresh_from_db()
    assert response.json()["status"] == "cancelled" and crew_member.unit.status == UnitStatus.AVAILABLE
    assert post(crew_member, body["id"], "acknowledge").json()["code"] == "assignment_cancelled"


def test_an_end_reason_past_its_limit_is_refused_by_the_service_and_the_offer_stands(
    program: Program, dispatcher: CrewMember, crew_member: CrewMember
) -> None:
    # The reason is sealed at rest, so no column bounds it: the service does.
    body = offer(dispatcher, make_incident(program, dispatcher), crew_member.unit)

    with pytest.raises(DomainError) as refused:
        services.assignment_cancel(
            assignment_id=body["id"], actor=dispatcher.user, device=None, reason="x" * (END_REASON_MAX_LENGTH + 1)
        )

    assert (refused.value.code, refused.value.field) == ("max_length", "reason")
    assert Assignment.objects.get(pk=body["id"]).status == AssignmentStatus.OFFERED


def test_crew_sets_its_unit_in_and_out_of_service(program: Program, crew_member: CrewMember) -> None:
    url = f"/api/v1/dispatch/units/{crew_member.unit.pk}/availability/"

    out = crew_member.client().post(url, {"status": "out_of_service"}, format="json")
    bad = crew_member.client().post(url, {"status": "on_scene"}, format="json")

    assert out.status_code == 200 and out.json()["status"] == "out_of_service"
    assert bad.status_code == 400 and bad.json()["errors"][0]["field"] == "status"


def test_closing_an_eligible_unserved_call_requires_a_reason(
    program: Program, dispatcher: CrewMember, crew_member: CrewMember
) -> None:
    incident = make_incident(program, dispatcher)
    offer(dispatcher, incident, crew_member.unit)
    url = f"/api/v1/dispatch/incidents/{incident.pk}/close/"

    refused = dispatcher.client().post(url, {}, format="json")
    other_without_note = dispatcher.client().post(url, {"unserved_reason": "other"}, format="json")
    closed = dispatcher.client().post(url, {"unserved_reason": "no_unit_available"}, format="json")

    assert refused.status_code == 400 and refused.json()["errors"][0]["field"] == "unserved_reason"
    assert other_without_note.status_code == 400 and other_without_note.json()["errors"][0]["field"] == "note"
    assert closed.status_code == 200 and closed.json()["unserved_reason"] == "no_unit_available"
    # Closing withdrew the offer and freed the unit.
    assert Assignment.objects.get(incident=incident).status == AssignmentStatus.CANCELLED
    crew_member.unit.refresh_from_db()
    assert crew_member.unit.status == UnitStatus.AVAILABLE


def test_a_close_of_an_incident_another_dispatcher_closed_is_refused_not_taken_for_a_retry(
    program: Program, dispatcher: CrewMember
) -> None:
    """A retried close is its sender's own close sent again: a colleague who closes the same
    call a moment later, for the same reason, learns it was closed already, and is not
    answered as if they had closed it."""
    colleague = make_staff(program)
    incident = make_incident(program, dispatcher)
    url = f"/api/v1/dispatch/incidents/{incident.pk}/close/"

    first = dispatcher.client().post(url, {"unserved_reason": "duplicate"}, format="json")
    retried = dispatcher.client().post(url, {"unserved_reason": "duplicate"}, format="json")
    colleagues = colleague.client().post(url, {"unserved_reason": "duplicate"}, format="json")

    assert (first.status_code, retried.status_code) == (200, 200)
    assert colleagues.status_code == 409 and colleagues.json()["code"] == "incident_closed"
    assert Incident.objects.get(pk=incident.pk).closed_by_id == dispatcher.user.pk


def test_the_database_refuses_closing_an_eligible_unserved_call_without_a_reason(
    program: Program, dispatcher: CrewMember
) -> None:
    incident = make_incident(program, dispatcher)

    with pytest.raises(IntegrityError), transaction.atomic():
        Incident.objects.filter(pk=incident.pk).update(status="closed", closed_at=timezone.now())


def test_calls_outside_the_program_and_served_calls_close_without_a_reason(
    program: Program, dispatcher: CrewMember, crew_member: CrewMember
) -> None:
    police_call = make_incident(program, dispatcher, violence_in_progress=True)
    served = make_incident(program, dispatcher)
    body = offer(dispatcher, served, crew_member.unit)
    post(crew_member, body["id"], "acknowledge")
    post(crew_member, body["id"], "status", {"status": "on_scene"})
    post(crew_member, body["id"], "status", {"status": "cleared"})

    services.incident_close(incident=police_call, actor=dispatcher.user, device=None)
    services.incident_close(incident=served, actor=dispatcher.user, device=None)

    assert Incident.objects.filter(status="closed", unserved_reason="").count() == 2
    with pytest.raises(services.DomainError):
        services.incident_close(
            incident=make_incident(program, dispatcher),
            actor=dispatcher.user,
            device=None,
            unserved_reason=UnservedReason.OTHER,
        )


def test_a_device_of_the_same_user_is_recorded_as_the_acknowledging_device(
    program: Program, dispatcher: CrewMember, crew_member: CrewMember
) -> None:
    phone, phone_token = device_with_token(crew_member.user, name="Phone")
    body = offer(dispatcher, make_incident(program, dispatcher), crew_member.unit)
    phone_member = CrewMember(crew_member.user, crew_member.unit, phone, phone_token)

    response = post(phone_member, body["id"], "acknowledge")

    assert response.json()["acknowledged_device"] == str(phone.pk)


UNREACHABLE_CHANNEL_LAYER = {
    "default": {
        "BACKEND": "channels_redis.core.RedisChannelLayer",
        "CONFIG": {"hosts": [{"address": "redis://127.0.0.1:1/0", "socket_connect_timeout": 1}]},
    }
}


@pytest.mark.django_db(transaction=True)
def test_an_offer_and_an_ack_committed_while_the_channel_layer_is_down_are_answered_as_applied(
    settings: Any, program: Program, dispatcher: CrewMember, crew_member: CrewMember
) -> None:
    """The nudge after commit only hurries the devices (they read the feed on their next pull
    or safety poll): its failure must not turn a committed write into a 500, which a
    dispatcher retries into `unit_busy` and a crew cannot tell from a lost acknowledgement."""
    incident = make_incident(program, dispatcher)
    settings.CHANNEL_LAYERS = UNREACHABLE_CHANNEL_LAYER
    dispatch_client, crew_client = dispatcher.client(), crew_member.client()
    dispatch_client.raise_request_exception = crew_client.raise_request_exception = False

    offered = dispatch_client.post(
        f"/api/v1/dispatch/incidents/{incident.pk}/assignments/", {"unit": str(crew_member.unit.pk)}, format="json"
    )
    assert offered.status_code == 201, offered.content
    acknowledged = crew_client.post(f"/api/v1/dispatch/assignments/{offered.json()['id']}/acknowledge/")

    assert acknowledged.status_code == 200, acknowledged.content
    assert acknowledged.json()["status"] == "acknowledged"
    assert Assignment.objects.get(pk=offered.json()["id"]).status == AssignmentStatus.ACKNOWLEDGED


@pytest.mark.django_db(transaction=True)
def test_one_event_id_sent_for_two_assignments_at_once_is_refused_naming_it_not_a_fault(
    program: Program, dispatcher: CrewMember, crew_member: CrewMember
) -> None:
    """Two reports under one event id, for two assignments, at once: the second waits for the
    first (on the event id's record lock) and is refused as `event_id_reused` (as it is when
    they come one after the other), not an IntegrityError that surfaces as a 500."""
    other = make_crew_member(program, unit=UnitFactory.create(program=program))
    assignments = []
    for member in (crew_member, other):
        assignment = services.assignment_offer(
            incident=make_incident(program, dispatcher), unit=member.unit, actor=dispatcher.user
        )
        services.assignment_acknowledge(assignment_id=assignment.pk, user=member.user, device=member.device)
        assignments.append(assignment)
    event_id = uuid.uuid4()

    with transaction.atomic():
        services.assignment_update_status(
            assignment_id=assignments[0].pk,
            user=crew_member.user,
            device=crew_member.device,
            status=AssignmentStatus.EN_ROUTE,
            client_event_id=event_id,
        )
        racing = run_until_done_or_blocked(
            lambda: services.assignment_update_status(
                assignment_id=assignments[1].pk,
                user=other.user,
                device=other.device,
                status=AssignmentStatus.EN_ROUTE,
                client_event_id=event_id,
            ),
            blocked_on=record_key(event_id),
        )
    error = racing.error()

    assert racing.waited  # on the event id's lock, which the first report held
    assert isinstance(error, DomainError), error
    assert (error.code, error.field, error.status_code) == ("event_id_reused", "event_id", 400)
    assert Assignment.objects.get(pk=assignments[1].pk).status == AssignmentStatus.ACKNOWLEDGED


def test_a_call_is_served_when_the_crew_got_there_not_when_their_offline_report_arrived(
    program: Program, dispatcher: CrewMember, crew_member: CrewMember
) -> None:
    """The crew got on scene in a dead zone and reported it 40 minutes later; meanwhile the
    partner's phone reported transporting. The call counted as served when the reports
    arrived, so crews working without signal looked 40 minutes slower."""
    partner = make_crew_member(program, unit=crew_member.unit)
    incident = make_incident(program, dispatcher)
    body = offer(dispatcher, incident, crew_member.unit)
    post(crew_member, body["id"], "acknowledge")
    Assignment.objects.filter(pk=body["id"]).update(offered_at=timezone.now() - timedelta(minutes=50))
    got_there = timezone.now() - timedelta(minutes=40)
    left = timezone.now() - timedelta(minutes=5)

    post(partner, body["id"], "status", {"status": "transporting", "observed_at": left.isoformat()})
    late = post(crew_member, body["id"], "status", {"status": "on_scene", "observed_at": got_there.isoformat()})

    assert late.json()["applied"] is False
    assert Incident.objects.get(pk=incident.pk).served_at == got_there
