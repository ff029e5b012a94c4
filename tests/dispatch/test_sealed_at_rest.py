"""The caller's description of the crisis and the unserved note are stored sealed."""

from __future__ import annotations

import pytest
from django.db import IntegrityError, connection, transaction
from django.utils import timezone

from apps.accounts.models import Program
from apps.common.encryption import is_sealed
from apps.dispatch import services
from apps.dispatch.models import Assignment, Incident, Response, UnservedReason
from tests.conftest import CrewMember
from tests.dispatch.factories import make_incident
from tests.sync.helpers import sync_client

pytestmark = pytest.mark.django_db


def stored(column: str, incident: Incident) -> str:
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT {column} FROM dispatch_incident WHERE id = %s", [incident.pk])  # noqa: S608
        return str(cursor.fetchone()[0])


def test_nature_and_unserved_note_are_ciphertext_in_the_database(program: Program, dispatcher: CrewMember) -> None:
    incident = make_incident(program, dispatcher, nature="Caller says her son stopped taking lithium")
    services.incident_close(
        incident=incident,
        actor=dispatcher.user,
        device=dispatcher.device,
        unserved_reason=UnservedReason.OTHER,
        note="Taken to hospital by family",
    )

    assert is_sealed(stored("nature", incident))
    assert "lithium" not in stored("nature", incident)
    assert is_sealed(stored("unserved_note", incident))
    assert "hospital" not in stored("unserved_note", incident)
    fresh = Incident.objects.get(pk=incident.pk)
    assert fresh.nature == "Caller says her son stopped taking lithium"
    assert fresh.unserved_note == "Taken to hospital by family"


def test_the_unserved_note_rule_still_holds_on_the_sealed_column(program: Program, dispatcher: CrewMember) -> None:
    """'Other' needs a note: the database constraint compares with the empty string, which stays empty."""
    incident = make_incident(program, dispatcher)
    closing = Incident.objects.filter(pk=incident.pk)
    with pytest.raises(IntegrityError, match="incident_other_reason_has_note"), transaction.atomic():
        closing.update(status="closed", closed_at=timezone.now(), unserved_reason=UnservedReason.OTHER)
    closing.update(status="closed", closed_at=timezone.now(), unserved_reason=UnservedReason.OTHER, unserved_note="x")
    assert is_sealed(stored("unserved_note", incident))


@pytest.mark.django_db(transaction=True)
def test_the_feed_copy_of_an_offer_is_sealed_and_the_crew_pulls_it_in_plain(
    program: Program, dispatcher: CrewMember, crew_member: CrewMember
) -> None:
    incident = make_incident(
        program, dispatcher, nature="Neighbour reports he talks of ending his life", callback_number="+12125550123"
    )
    services.assignment_offer(incident=incident, unit=crew_member.unit, actor=dispatcher.user)

    with connection.cursor() as cursor:
        cursor.execute("SELECT data::text FROM sync_changeentry WHERE data::text LIKE %s", [f"%{incident.pk}%"])
        stored_copies = [row[0] for row in cursor.fetchall()]
    pulled = sync_client(crew_member).get("/api/v1/sync/feed/").json()["entries"]

    assert stored_copies
    for copy in stored_copies:
        for plaintext in ("ending his life", "5550123", "1 Main St"):
            assert plaintext not in copy
    offered = next(entry for entry in pulled if entry["data"].get("incident_id") == str(incident.pk))
    assert offered["data"]["incident"]["nature"] == "Neighbour reports he talks of ending his life"
    assert offered["data"]["incident"]["callback_number"] == "+12125550123"
    assert offered["data"]["incident"]["location"]["address"] == "1 Main St"


def test_a_crews_reason_for_declining_is_ciphertext_in_the_database(
    program: Program, dispatcher: CrewMember, crew_member: CrewMember
) -> None:
    assignment = services.assignment_offer(
        incident=make_incident(program, dispatcher), unit=crew_member.unit, actor=dispatcher.user
    )

    services.assignment_decline(
        assignment_id=assignment.pk,
        user=crew_member.user,
        device=crew_member.device,
        reason="We treated him last week; he asked for another team",
    )

    with connection.cursor() as cursor:
        cursor.execute("SELECT end_reason FROM dispatch_assignment WHERE id = %s", [assignment.pk])
        (stored_reason,) = cursor.fetchone()
    assert is_sealed(stored_reason)
    assert "treated" not in stored_reason
    assignment.refresh_from_db()
    assert assignment.end_reason == "We treated him last week; he asked for another team"


def overridden_and_offered(
    program: Program, dispatcher: CrewMember, crew_member: CrewMember
) -> tuple[Incident, Assignment]:
    """A call the dispatcher sent another response than triage's, with a reason, then offered."""
    incident = make_incident(program, dispatcher)
    other = next(response for response in Response.values if response != incident.recommended_response)
    services.incident_override(
        incident=incident, response=other, reason="Mother says he is off his meds", actor=dispatcher.user, device=None
    )
    return incident, services.assignment_offer(incident=incident, unit=crew_member.unit, actor=dispatcher.user)


def test_an_override_reason_and_the_timelines_reasons_are_ciphertext_in_the_database(
    program: Program, dispatcher: CrewMember, crew_member: CrewMember
) -> None:
    incident, assignment = overridden_and_offered(program, dispatcher, crew_member)
    services.assignment_cancel(
        assignment_id=assignment.pk, actor=dispatcher.user, device=None, reason="Family took him to Bellevue"
    )

    assert is_sealed(stored("override_reason", incident))
    assert "meds" not in stored("override_reason", incident)
    with connection.cursor() as cursor:
        cursor.execute("SELECT detail::text, reason FROM dispatch_timelineevent WHERE incident_id = %s", [incident.pk])
        events = cursor.fetchall()
    assert all("meds" not in detail and "Bellevue" not in detail for detail, _reason in events)
    assert sum(is_sealed(reason) for _detail, reason in events) == 2
    # Read back in plain, in the timeline's wire form as before.
    assert Incident.objects.get(pk=incident.pk).override_reason == "Mother says he is off his meds"
    timeline = dispatcher.client().get(f"/api/v1/dispatch/incidents/{incident.pk}/").json()["timeline"]
    reasons = [event["detail"].get("reason") for event in timeline if event["kind"] in ("overridden", "cancelled")]
    assert reasons == ["Mother says he is off his meds", "Family took him to Bellevue"]


@pytest.mark.django_db(transaction=True)
def test_the_feed_copies_of_an_override_and_a_decline_seal_their_reasons_and_pull_in_plain(
    program: Program, dispatcher: CrewMember, crew_member: CrewMember
) -> None:
    incident, assignment = overridden_and_offered(program, dispatcher, crew_member)
    services.assignment_decline(
        assignment_id=assignment.pk, user=crew_member.user, device=crew_member.device, reason="We know him; ask Unit 9"
    )

    with connection.cursor() as cursor:
        cursor.execute("SELECT data::text FROM sync_changeentry WHERE data::text LIKE %s", [f"%{incident.pk}%"])
        stored_copies = [row[0] for row in cursor.fetchall()]
    pulled = sync_client(dispatcher).get("/api/v1/sync/feed/").json()["entries"]

    assert stored_copies
    assert all("meds" not in copy and "Unit 9" not in copy for copy in stored_copies)
    incidents = [entry["data"] for entry in pulled if entry["id"] == str(incident.pk)]
    assignments = [entry["data"] for entry in pulled if entry["id"] == str(assignment.pk)]
    assert incidents[-1]["triage"]["override_reason"] == "Mother says he is off his meds"
    assert assignments[-1]["end_reason"] == "We know him; ask Unit 9"
