"""The follow-up and referral API: the queue, step actions, bad input and outsiders."""

from __future__ import annotations

import datetime as dt
import uuid

import pytest
from django.db import DatabaseError
from django.utils import timezone

from apps.accounts.models import Role
from apps.audit.models import AuditEvent
from apps.care.models import Referral, ReferralOutcomeEvent, ReferralTaskEvent
from apps.followups.models import ContactAttempt, FollowUpStep, StepStatus
from tests.conftest import CrewMember, audit_trail_refusing, make_crew_member
from tests.followups.factories import case_manager, referral, steps_of

pytestmark = pytest.mark.django_db(transaction=True)


def _snapshot(step: FollowUpStep) -> tuple[object, ...]:
    step.refresh_from_db()
    return (step.status, step.due_at, step.owner_id, step.closed_at, step.events.count(), step.attempts.count())


def test_a_case_manager_works_the_queue(crew_member: CrewMember) -> None:
    manager = case_manager(crew_member)
    [first, second, *_] = steps_of(referral(crew_member))
    client = manager.client()

    queue = client.get("/api/v1/followups/steps/?status=pending&mine=true")
    attempt = client.post(
        f"/api/v1/followups/steps/{first.pk}/attempts/",
        {"method": "phone", "result": "no_answer", "notes": "Voicemail full.", "attempted_at": timezone.now()},
        format="json",
    )
    completed = client.post(f"/api/v1/followups/steps/{first.pk}/complete/", {}, format="json")
    missed = client.post(f"/api/v1/followups/steps/{second.pk}/missed/", {"reason": "Moved away"}, format="json")

    assert queue.status_code == 200 and queue.json()["count"] == 4
    assert attempt.status_code == 201 and ContactAttempt.objects.get().result == "no_answer"
    assert completed.status_code == 200 and completed.json()["status"] == "completed"
    assert [a["result"] for a in completed.json()["attempts"]] == ["no_answer"]
    assert missed.json()["missed_reason"] == "Moved away"
    # Every read and write of a step about a person is attributable (P8).
    assert AuditEvent.objects.filter(actor_id=manager.user.pk, record_type="followups.step").count() >= 3
    assert AuditEvent.objects.filter(record_type="followups.contact_attempt", device_id=manager.device.pk).exists()


def test_a_due_time_in_the_past_is_refused_and_nothing_changes(crew_member: CrewMember) -> None:
    manager = case_manager(crew_member)
    [step, *_] = steps_of(referral(crew_member))
    before = _snapshot(step)

    response = manager.client().post(
        f"/api/v1/followups/steps/{step.pk}/reschedule/",
        {"due_at": (timezone.now() - dt.timedelta(hours=1)).isoformat(), "reason": "Typo"},
        format="json",
    )

    assert response.status_code == 400
    assert response.json()["errors"] == [
        {"field": "due_at", "code": "due_at_in_past", "detail": "The new due time is in the past."}
    ]
    assert _snapshot(step) == before


def test_a_due_time_at_the_end_of_the_calendar_is_refused_naming_it_and_nothing_changes(
    crew_member: CrewMember,
) -> None:
    """A real time, but the supervisor's alert after it would fall beyond the year 9999: the
    answer must say so, not fail as a server error the client retries for ever. (Every
    time a client sends is refused beyond the year 2999, before any arithmetic on it.)"""
    manager = case_manager(crew_member)
    [step, *_] = steps_of(referral(crew_member))
    before = _snapshot(step)

    response = manager.client().post(
        f"/api/v1/followups/steps/{step.pk}/reschedule/",
        {"due_at": "9999-12-31T23:59:59Z", "reason": "Typo"},
        format="json",
    )

    assert response.status_code == 400
    assert [(e["field"], e["code"]) for e in response.json()["errors"]] == [("due_at", "time_out_of_range")]
    assert _snapshot(step) == before


@pytest.mark.parametrize("naive", ["2026-11-20T14:05:00", "2026-11-20"])
def test_a_time_without_its_utc_offset_is_refused_naming_the_field(crew_member: CrewMember, naive: str) -> None:
    referral_id = referral(crew_member)
    [step, *_] = steps_of(referral_id)
    before = _snapshot(step)
    client = case_manager(crew_member).client()
    attempt = {"method": "phone", "result": "no_answer", "attempted_at": naive}

    answers = {
        "due_before": client.get("/api/v1/followups/steps/", {"due_before": naive}),
        "attempted_at": client.post(f"/api/v1/followups/steps/{step.pk}/attempts/", attempt, format="json"),
        "due_at": client.post(
            f"/api/v1/followups/steps/{step.pk}/reschedule/", {"due_at": naive, "reason": "Moved"}, format="json"
        ),
        "observed_at": client.post(
            f"/api/v1/care/referrals/{referral_id}/outcomes/",
            {"outcome": "attended", "observed_at": naive},
            format="json",
        ),
    }

    assert {field: (answer.status_code, answer.json()["errors"][0]["field"]) for field, answer in answers.items()} == {
        field: (400, field) for field in answers
    }
    assert _snapshot(step) == before
    assert not ReferralOutcomeEvent.objects.exists()


@pytest.mark.parametrize("spelling", ["{}:00Z\x00", "{}:00Z\x00 or later", "{}\x00Z"])
def test_a_time_holding_a_nul_character_is_refused_naming_the_field(crew_member: CrewMember, spelling: str) -> None:
    """Python's ISO 8601 parser stops reading at a NUL, so the text after it would be dropped
    without a word and the time read as something the client did not send."""
    referral_id = referral(crew_member)
    [step, *_] = steps_of(referral_id)
    before = _snapshot(step)
    client = case_manager(crew_member).client()
    past, future = spelling.format("2026-11-20T14:05"), spelling.format("2099-11-20T14:05")
    attempt = {"method": "phone", "result": "no_answer", "attempted_at": past}

    answers = {
        "due_before": client.get("/api/v1/followups/steps/", {"due_before": past}),
        "attempted_at": client.post(f"/api/v1/followups/steps/{step.pk}/attempts/", attempt, format="json"),
        "due_at": client.post(
            f"/api/v1/followups/steps/{step.pk}/reschedule/", {"due_at": future, "reason": "Moved"}, format="json"
        ),
        "observed_at": client.post(
            f"/api/v1/care/referrals/{referral_id}/outcomes/",
            {"outcome": "attended", "observed_at": past},
            format="json",
        ),
    }

    assert {
        field: (answer.status_code, [error["field"] for error in answer.json().get("errors", [])])
        for field, answer in answers.items()
    } == {field: (400, [field]) for field in answers}
    assert _snapshot(step) == before
    assert not ReferralOutcomeEvent.objects.exists()


def test_a_closed_step_cannot_be_closed_again(crew_member: CrewMember) -> None:
    manager = case_manager(crew_member)
    [step, *_] = steps_of(referral(crew_member))
    manager.client().post(f"/api/v1/followups/steps/{step.pk}/complete/", {}, format="json")
    before = _snapshot(step)

    response = manager.client().post(f"/api/v1/followups/steps/{step.pk}/missed/", {"reason": "x"}, format="json")

    assert (response.status_code, response.json()["code"]) == (409, "step_closed")
    assert _snapshot(step) == before and step.status == StepStatus.COMPLETED


def test_missing_reason_and_unknown_fields_name_the_field(crew_member: CrewMember) -> None:
    [step, *_] = steps_of(referral(crew_member))
    client = case_manager(crew_member).client()

    missed = client.post(f"/api/v1/followups/steps/{step.pk}/missed/", {}, format="json")
    attempt = client.post(
        f"/api/v1/followups/steps/{step.pk}/attempts/",
        {"method": "pigeon", "result": "reached", "attempted_at": timezone.now(), "mood": "ok"},
        format="json",
    )

    assert missed.status_code == 400 and [e["field"] for e in missed.json()["errors"]] == ["reason"]
    assert attempt.status_code == 400 and {e["field"] for e in attempt.json()["errors"]} == {"mood"}
    assert not ContactAttempt.objects.exists()


def test_an_outcome_dated_ahead_of_the_servers_clock_is_refused_naming_the_field(crew_member: CrewMember) -> None:
    referral_id = referral(crew_member)
    client = case_manager(crew_member).client()

    answer = client.post(
        f"/api/v1/care/referrals/{referral_id}/outcomes/",
        {"outcome": "declined", "observed_at": (timezone.now() + dt.timedelta(days=365)).isoformat()},
        format="json",
    )

    assert (answer.status_code, answer.json()["code"], answer.json()["errors"][0]["field"]) == (
        400,
        "time_in_future",
        "observed_at",
    )
    assert Referral.objects.get(pk=referral_id).status == "open"
    assert not ReferralOutcomeEvent.objects.exists()


def test_an_outcome_sent_again_with_its_id_is_recorded_once_and_other_content_under_it_refused(
    crew_member: CrewMember,
) -> None:
    referral_id = referral(crew_member)
    client = case_manager(crew_member).client()
    outcome_id = str(uuid.uuid4())
    body = {
        "id": outcome_id,
        "outcome": "connected",
        "observed_at": timezone.now().isoformat(),
        "details": "Intake done",
    }
    url = f"/api/v1/care/referrals/{referral_id}/outcomes/"

    first = client.post(url, body, format="json")
    retry = client.post(url, body, format="json")  # the answer to the first was lost
    other = client.post(url, {**body, "outcome": "declined"}, format="json")
    taken = client.post(url, {**body, "id": str(referral_id)}, format="json")

    assert (first.status_code, retry.status_code) == (201, 201)
    assert retry.json() == first.json()
    assert [event.pk for event in ReferralOutcomeEvent.objects.all()] == [uuid.UUID(outcome_id)]
    assert (other.status_code, other.json()["code"], other.json()["errors"][0]["field"]) == (409, "id_in_use", "id")
    assert (taken.status_code, taken.json()["code"], taken.json()["errors"][0]["field"]) == (409, "id_in_use", "id")
    assert Referral.objects.get(pk=referral_id).status == "connected"


def test_an_outcome_id_another_person_recorded_is_not_answered_as_theirs(crew_member: CrewMember) -> None:
    """The same content under an outcome's id is a retry of whoever recorded it. Sent by a
    colleague, it is not theirs to retry: answered as theirs, the audit trail would name the
    colleague as the outcome's recorder."""
    referral_id = referral(crew_member)
    manager, colleague = case_manager(crew_member), case_manager(crew_member, of_program=False)
    body = {
        "id": str(uuid.uuid4()),
        "outcome": "connected",
        "observed_at": timezone.now().isoformat(),
        "details": "Intake done",
    }
    url = f"/api/v1/care/referrals/{referral_id}/outcomes/"

    first = manager.client().post(url, body, format="json")
    colleagues = colleague.client().post(url, body, format="json")

    assert first.status_code == 201
    assert (colleagues.status_code, colleagues.json()["code"], colleagues.json()["errors"][0]["field"]) == (
        409,
        "id_in_use",
        "id",
    )
    recorders = AuditEvent.objects.filter(record_type="care.referral_outcome", action="create")
    assert list(recorders.values_list("actor_id", flat=True)) == [manager.user.pk]


def test_a_task_move_sent_again_by_its_maker_is_answered_as_the_first_and_recorded_once(
    crew_member: CrewMember,
) -> None:
    referral_id = referral(crew_member)
    manager = case_manager(crew_member)
    colleague = case_manager(crew_member, of_program=False)
    url = f"/api/v1/care/referrals/{referral_id}/status/"
    move = {"status": "cancelled", "reason": "Moved to Buffalo"}

    first = manager.client().post(url, move, format="json")
    retry = manager.client().post(url, move, format="json")  # the answer to the first was lost
    other_reason = manager.client().post(url, {**move, "reason": "Declined"}, format="json")
    colleagues = colleague.client().post(url, move, format="json")

    assert (first.status_code, retry.status_code) == (200, 200)
    assert retry.json()["task_status"] == first.json()["task_status"] == "cancelled"
    assert [(o.status_code, o.json()["code"]) for o in (other_reason, colleagues)] == [(409, "invalid_transition")] * 2
    assert Referral.objects.get(pk=referral_id).task_events.count() == 1


def test_completing_a_cancelled_referral_is_refused_and_nothing_changes(crew_member: CrewMember) -> None:
    referral_id = referral(crew_member)
    client = case_manager(crew_member).client()
    assert (
        client.post(
            f"/api/v1/care/referrals/{referral_id}/status/", {"status": "cancelled", "reason": "Moved"}, format="json"
        ).json()["task_status"]
        == "cancelled"
    )

    completed = client.post(f"/api/v1/care/referrals/{referral_id}/status/", {"status": "completed"}, format="json")
    outcome = client.post(
        f"/api/v1/care/referrals/{referral_id}/outcomes/",
        {"outcome": "attended", "observed_at": timezone.now().isoformat()},
        format="json",
    )

    assert (completed.status_code, completed.json()["code"]) == (409, "invalid_transition")
    assert completed.json()["errors"][0]["field"] == "status"
    assert (outcome.status_code, outcome.json()["code"]) == (409, "referral_cancelled")
    referral_row = Referral.objects.get(pk=referral_id)
    assert (referral_row.task_status, referral_row.status) == ("cancelled", "open")
    assert referral_row.task_events.count() == 1 and not ReferralOutcomeEvent.objects.exists()


def test_the_referral_timeline_and_an_outcome_recorded_by_a_case_manager(crew_member: CrewMember) -> None:
    referral_id = referral(crew_member, priority="urgent", warm_handoff=True, consent_to_share=True)
    client = case_manager(crew_member).client()
    for status in ("received", "accepted", "in_progress"):
        assert (
            client.post(f"/api/v1/care/referrals/{referral_id}/status/", {"status": status}, format="json").status_code
            == 200
        )

    response = client.post(
        f"/api/v1/care/referrals/{referral_id}/outcomes/",
        {"outcome": "attended", "observed_at": timezone.now().isoformat()},
        format="json",
    )

    body = response.json()
    assert response.status_code == 201
    assert [e["to_status"] for e in body["task_timeline"]] == ["received", "accepted", "in_progress"]
    assert (body["status"], body["priority"], body["warm_handoff"]) == ("attended", "urgent", True)
    by_key = {s.key: s.status for s in steps_of(referral_id)}
    assert by_key == {
        "first_contact": "completed",
        "connection_check": "completed",
        "outcome_7d": "completed",
        "outcome_30d": "pending",
    }


def test_an_outcome_on_a_referral_of_another_program_is_not_found(
    crew_member: CrewMember, foreign_dispatcher: CrewMember
) -> None:
    referral_id = referral(crew_member)
    foreign_manager = make_crew_member(foreign_dispatcher.unit.program, role=Role.CASE_MANAGER)

    response = foreign_manager.client().post(
        f"/api/v1/care/referrals/{referral_id}/outcomes/",
        {"outcome": "connected", "observed_at": timezone.now().isoformat()},
        format="json",
    )

    assert response.status_code == 404
    assert not ReferralOutcomeEvent.objects.exists()


@pytest.mark.parametrize("who", ["outsider", "foreign_dispatcher"])
def test_outsiders_see_and_change_nothing(
    crew_member: CrewMember, outsider: CrewMember, foreign_dispatcher: CrewMember, who: str
) -> None:
    """A crew of another unit, or anyone of another program, gets 404 on every endpoint."""
    referral_id = referral(crew_member)
    [step, *_] = steps_of(referral_id)
    before = _snapshot(step)
    client = {"outsider": outsider, "foreign_dispatcher": foreign_dispatcher}[who].client()
    later = (timezone.now() + dt.timedelta(days=1)).isoformat()

    responses = [
        client.get(f"/api/v1/followups/steps/{step.pk}/"),
        client.post(
            f"/api/v1/followups/steps/{step.pk}/attempts/",
            {"method": "phone", "result": "reached", "attempted_at": timezone.now().isoformat()},
            format="json",
        ),
        client.post(f"/api/v1/followups/steps/{step.pk}/complete/", {}, format="json"),
        client.post(f"/api/v1/followups/steps/{step.pk}/reschedule/", {"due_at": later, "reason": "x"}, format="json"),
        client.post(f"/api/v1/followups/steps/{step.pk}/missed/", {"reason": "x"}, format="json"),
        client.post(f"/api/v1/followups/steps/{step.pk}/assign/", {"owner_id": str(uuid.uuid4())}, format="json"),
        client.get(f"/api/v1/care/referrals/{referral_id}/"),
        client.post(f"/api/v1/care/referrals/{referral_id}/status/", {"status": "received"}, format="json"),
        client.post(
            f"/api/v1/care/referrals/{referral_id}/outcomes/",
            {"outcome": "connected", "observed_at": timezone.now().isoformat()},
            format="json",
        ),
    ]

    assert [r.status_code for r in responses] == [404] * len(responses)
    assert client.get("/api/v1/followups/steps/").json()["count"] == 0
    assert _snapshot(step) == before
    assert Referral.objects.get(pk=referral_id).task_status == "requested"


def test_an_owner_from_another_program_is_refused_as_an_id_no_one_has(
    crew_member: CrewMember, foreign_dispatcher: CrewMember
) -> None:
    """Whether an id is someone's account in another program is not the case manager's to
    learn: both answers are the same."""
    [step, *_] = steps_of(referral(crew_member))
    before = _snapshot(step)
    client = case_manager(crew_member).client()

    answers = [
        client.post(f"/api/v1/followups/steps/{step.pk}/assign/", {"owner_id": owner_id}, format="json")
        for owner_id in (str(uuid.uuid4()), str(foreign_dispatcher.user.pk))
    ]

    assert [answer.status_code for answer in answers] == [400, 400]
    assert answers[0].json()["errors"] == answers[1].json()["errors"]
    assert answers[0].json()["errors"][0]["field"] == "owner_id"
    assert _snapshot(step) == before


def test_a_step_served_with_its_contact_attempts_records_a_read_of_each_attempt(crew_member: CrewMember) -> None:
    """A contact attempt's notes are health information (sealed at rest, a synced record of
    their own). A case manager who opens a step reads every attempt on it, colleagues' notes
    included: the trail must answer "who saw attempt X" with this read, as it does for the
    admin's timeline, not only with a read of the step."""
    writer, reader = case_manager(crew_member), case_manager(crew_member, of_program=False)
    [step, *_] = steps_of(referral(crew_member))
    written = writer.client().post(
        f"/api/v1/followups/steps/{step.pk}/attempts/",
        {
            "method": "phone",
            "result": "no_answer",
            "notes": "Sister says he is staying at the shelter.",
            "attempted_at": timezone.now(),
        },
        format="json",
    )
    assert written.status_code == 201
    attempt_id = uuid.UUID(written.json()["id"])

    detail = reader.client().get(f"/api/v1/followups/steps/{step.pk}/")

    assert [attempt["id"] for attempt in detail.json()["attempts"]] == [str(attempt_id)]
    reads = AuditEvent.objects.filter(action="read", actor_id=reader.user.pk, record_type="followups.contact_attempt")
    assert list(reads.values_list("record_id", "device_id")) == [(attempt_id, reader.device.pk)]


def test_an_outcome_recorded_over_the_api_is_audited_as_the_create_of_that_outcome(crew_member: CrewMember) -> None:
    """An outcome is a health record of its own (care.referral_outcome, synced to devices, its
    details sealed): the trail must say who created which outcome, as it does when a device
    pushes one or the admin records one, not that the referral, which already existed, was
    created again. What the outcome changed (the referral's status, the steps it completed)
    is the same writer's update."""
    manager = case_manager(crew_member)
    referral_id = referral(crew_member)

    response = manager.client().post(
        f"/api/v1/care/referrals/{referral_id}/outcomes/",
        {"outcome": "attended", "observed_at": timezone.now(), "details": "Attended intake; started on sertraline."},
        format="json",
    )

    assert response.status_code == 201
    outcome_id = ReferralOutcomeEvent.objects.get().pk
    written = AuditEvent.objects.filter(actor_id=manager.user.pk).exclude(action="read")
    completed = FollowUpStep.objects.filter(closing_outcome_id=outcome_id).values_list("pk", flat=True)
    assert set(written.values_list("action", "record_type", "record_id", "device_id")) == {
        ("create", "care.referral_outcome", outcome_id, manager.device.pk),
        ("update", "care.referral", referral_id, manager.device.pk),
        *(("update", "followups.step", step_id, manager.device.pk) for step_id in completed),
    }
    assert completed


def test_a_referral_served_with_its_outcomes_records_a_read_of_each_outcome(crew_member: CrewMember) -> None:
    """A referral comes with its outcomes, their details included (what the service or the
    person said: sealed at rest, a synced record of their own). Opening the referral reads
    each one, and the trail must say so, as it does for the admin's timeline."""
    writer, reader = case_manager(crew_member), case_manager(crew_member, of_program=False)
    referral_id = referral(crew_member)
    recorded = writer.client().post(
        f"/api/v1/care/referrals/{referral_id}/outcomes/",
        {"outcome": "no_show", "observed_at": timezone.now(), "details": "Clinic says he was admitted elsewhere."},
        format="json",
    )
    assert recorded.status_code == 201
    outcome_id = ReferralOutcomeEvent.objects.get().pk

    detail = reader.client().get(f"/api/v1/care/referrals/{referral_id}/")

    assert [outcome["id"] for outcome in detail.json()["outcomes"]] == [str(outcome_id)]
    reads = AuditEvent.objects.filter(action="read", actor_id=reader.user.pk, record_type="care.referral_outcome")
    assert list(reads.values_list("record_id", "device_id")) == [(outcome_id, reader.device.pk)]


def test_a_contact_attempt_whose_audit_row_cannot_be_written_is_not_recorded(crew_member: CrewMember) -> None:
    """The attempt and the audit row saying who recorded it commit together (P8): when the
    trail refuses the row, no attempt is kept without its author."""
    manager = case_manager(crew_member)
    [step, *_] = steps_of(referral(crew_member))
    attempt = {"method": "phone", "result": "no_answer", "notes": "Rang twice.", "attempted_at": timezone.now()}

    with (
        audit_trail_refusing("create", "followups.contact_attempt"),
        pytest.raises(DatabaseError, match="audit trail unavailable"),
    ):
        manager.client().post(f"/api/v1/followups/steps/{step.pk}/attempts/", attempt, format="json")

    assert not ContactAttempt.objects.exists()


def test_a_contact_attempt_sent_again_with_its_id_is_created_once_in_the_audit_trail(crew_member: CrewMember) -> None:
    """A retry whose first answer was lost writes nothing: it answers with the attempt as it
    stands, a read, as a retried intake is; the trail holds one creation, the first."""
    manager = case_manager(crew_member)
    [step, *_] = steps_of(referral(crew_member))
    attempt_id = uuid.uuid4()
    attempt = {
        "id": str(attempt_id),
        "method": "phone",
        "result": "no_answer",
        "notes": "Rang twice.",
        "attempted_at": timezone.now(),
    }
    url = f"/api/v1/followups/steps/{step.pk}/attempts/"

    first = manager.client().post(url, attempt, format="json")
    retry = manager.client().post(url, attempt, format="json")

    assert (first.status_code, retry.status_code) == (201, 201)
    assert retry.json() == first.json()
    rows = AuditEvent.objects.filter(record_type="followups.contact_attempt", record_id=attempt_id)
    assert sorted(rows.values_list("action", "actor_id")) == [
        ("create", manager.user.pk),
        ("read", manager.user.pk),
    ]


def test_an_outcome_whose_audit_row_cannot_be_written_is_not_recorded(crew_member: CrewMember) -> None:
    """The outcome (and the status and steps it settles) and the audit row saying who recorded
    it commit together (P8): when the trail refuses the row, nothing is kept."""
    manager = case_manager(crew_member)
    referral_id = referral(crew_member)
    steps = steps_of(referral_id)
    before = [_snapshot(step) for step in steps]
    outcome = {"outcome": "connected", "observed_at": timezone.now().isoformat(), "details": "Intake done"}

    with (
        audit_trail_refusing("create", "care.referral_outcome"),
        pytest.raises(DatabaseError, match="audit trail unavailable"),
    ):
        manager.client().post(f"/api/v1/care/referrals/{referral_id}/outcomes/", outcome, format="json")

    assert not ReferralOutcomeEvent.objects.exists()
    assert Referral.objects.get(pk=referral_id).status == "open"
    assert [_snapshot(step) for step in steps] == before


def test_an_outcome_sent_again_with_its_id_is_created_once_in_the_audit_trail(crew_member: CrewMember) -> None:
    """A retry whose first answer was lost writes nothing: it answers with the outcome as it
    stands, a read, as a retried intake is; the trail holds one creation, the first."""
    manager = case_manager(crew_member)
    referral_id = referral(crew_member)
    outcome_id = uuid.uuid4()
    body = {
        "id": str(outcome_id),
        "outcome": "connected",
        "observed_at": timezone.now().isoformat(),
        "details": "Intake done",
    }
    url = f"/api/v1/care/referrals/{referral_id}/outcomes/"

    first = manager.client().post(url, body, format="json")
    retry = manager.client().post(url, body, format="json")

    assert (first.status_code, retry.status_code) == (201, 201)
    rows = AuditEvent.objects.filter(record_type="care.referral_outcome", record_id=outcome_id)
    assert rows.filter(action="create").count() == 1
    assert set(rows.values_list("action", flat=True)) == {"create", "read"}
    assert set(rows.values_list("actor_id", flat=True)) == {manager.user.pk}


def test_a_task_move_whose_audit_row_cannot_be_written_is_not_made(crew_member: CrewMember) -> None:
    """The move and the audit row saying who made it commit together (P8): when the trail
    refuses the row, the referral stays where it was on its timeline."""
    manager = case_manager(crew_member)
    referral_id = referral(crew_member)
    move = {"status": "accepted", "reason": "Intake slot on Monday"}

    with (
        audit_trail_refusing("update", "care.referral"),
        pytest.raises(DatabaseError, match="audit trail unavailable"),
    ):
        manager.client().post(f"/api/v1/care/referrals/{referral_id}/status/", move, format="json")

    referral_row = Referral.objects.get(pk=referral_id)
    assert referral_row.task_status == "requested"
    assert not referral_row.task_events.exists()


def test_a_task_move_sent_again_is_one_update_in_the_audit_trail(crew_member: CrewMember) -> None:
    """A retry whose first answer was lost writes nothing: it answers with the referral as it
    stands, a read, as a retried intake is; the trail holds one update, the move's."""
    manager = case_manager(crew_member)
    referral_id = referral(crew_member)
    url = f"/api/v1/care/referrals/{referral_id}/status/"
    move = {"status": "accepted", "reason": "Intake slot on Monday"}

    first = manager.client().post(url, move, format="json")
    retry = manager.client().post(url, move, format="json")

    assert (first.status_code, retry.status_code) == (200, 200)
    rows = AuditEvent.objects.filter(record_type="care.referral", record_id=referral_id, actor_id=manager.user.pk)
    assert rows.filter(action="update").count() == 1
    assert rows.filter(action="read").exists()


def test_a_task_move_is_the_creation_of_its_task_event_in_the_audit_trail(crew_member: CrewMember) -> None:
    """A move writes a task event (its reason often says why clinically: a health record of
    its own). The trail says who created it, once; the retry's answer, which writes nothing,
    is a read of it, once."""
    manager = case_manager(crew_member)
    referral_id = referral(crew_member)
    url = f"/api/v1/care/referrals/{referral_id}/status/"
    move = {"status": "rejected", "reason": "Beds full; needs detox first."}

    first = manager.client().post(url, move, format="json")
    retry = manager.client().post(url, move, format="json")

    assert (first.status_code, retry.status_code) == (200, 200)
    event = ReferralTaskEvent.objects.get(referral_id=referral_id)
    rows = AuditEvent.objects.filter(record_type="care.referral_task_event", record_id=event.pk)
    assert list(rows.order_by("occurred_at", "id").values_list("action", "actor_id", "device_id")) == [
        ("create", manager.user.pk, manager.device.pk),
        ("read", manager.user.pk, manager.device.pk),
    ]


def test_a_task_move_whose_task_events_audit_row_cannot_be_written_is_not_made(crew_member: CrewMember) -> None:
    """The task event and the row saying who created it commit together (P8)."""
    manager = case_manager(crew_member)
    referral_id = referral(crew_member)
    move = {"status": "accepted", "reason": "Intake slot on Monday"}

    with (
        audit_trail_refusing("create", "care.referral_task_event"),
        pytest.raises(DatabaseError, match="audit trail unavailable"),
    ):
        manager.client().post(f"/api/v1/care/referrals/{referral_id}/status/", move, format="json")

    referral_row = Referral.objects.get(pk=referral_id)
    assert referral_row.task_status == "requested"
    assert not referral_row.task_events.exists()


def test_an_outcome_sent_again_is_one_read_of_it_and_its_answer_still_reads_the_others(
    crew_member: CrewMember,
) -> None:
    """Each request has one row for the outcome it wrote: its creation, or for a retry, the
    read the service records. The answer's other outcomes are read with it, each time."""
    manager = case_manager(crew_member)
    referral_id = referral(crew_member)
    url = f"/api/v1/care/referrals/{referral_id}/outcomes/"
    earlier_id, outcome_id = uuid.uuid4(), uuid.uuid4()
    observed_at = timezone.now().isoformat()
    earlier = {"id": str(earlier_id), "outcome": "no_show", "observed_at": observed_at, "details": "Missed intake"}
    body = {"id": str(outcome_id), "outcome": "connected", "observed_at": observed_at, "details": "Intake done"}
    assert manager.client().post(url, earlier, format="json").status_code == 201

    first = manager.client().post(url, body, format="json")
    retry = manager.client().post(url, body, format="json")

    assert (first.status_code, retry.status_code) == (201, 201)
    assert {outcome["id"] for outcome in retry.json()["outcomes"]} == {str(earlier_id), str(outcome_id)}

    def trail(record_id: uuid.UUID) -> list[str]:
        rows = AuditEvent.objects.filter(
            record_type="care.referral_outcome", record_id=record_id, actor_id=manager.user.pk
        )
        return list(rows.order_by("occurred_at", "id").values_list("action", flat=True))

    assert trail(outcome_id) == ["create", "read"]
    assert trail(earlier_id) == ["create", "read", "read"]
