"""Contact notes and why a step was missed or moved are clinical text: stored sealed, read back as plaintext."""

from __future__ import annotations

import datetime as dt
import uuid

import pytest
from django.db import connection
from django.utils import timezone

from apps.common.encryption import is_sealed
from apps.followups import services
from apps.followups.models import ContactAttempt, FollowUpStep, StepEvent
from tests.care.factories import pushed
from tests.conftest import CrewMember, in_the_admin
from tests.followups.factories import referral, steps_of

pytestmark = pytest.mark.django_db


def test_contact_attempt_notes_are_ciphertext_in_the_database(crew_member: CrewMember) -> None:
    [step, *_] = steps_of(referral(crew_member))
    attempt_id = uuid.uuid4()
    fields = {
        "step_id": str(step.pk),
        "method": "phone",
        "result": "reached",
        "notes": "Says the new medication makes her drowsy.",
        "attempted_at": "2026-11-21T16:00:00+00:00",
    }
    assert pushed(crew_member, "followups.contact_attempt", fields, record_id=attempt_id)["status"] == "applied"

    with connection.cursor() as cursor:
        cursor.execute("SELECT notes FROM followups_contactattempt WHERE id = %s", [attempt_id])
        [stored] = cursor.fetchone()
    assert is_sealed(stored)
    assert "medication" not in stored
    assert ContactAttempt.objects.get(pk=attempt_id).notes == "Says the new medication makes her drowsy."


def test_why_a_step_was_missed_or_moved_is_ciphertext_in_the_database(crew_member: CrewMember) -> None:
    first, second, *_ = steps_of(referral(crew_member))
    services.step_reschedule(
        step=first,
        actor=crew_member.user,
        due_at=timezone.now() + dt.timedelta(days=1),
        reason="In detox until Friday",
        accessor=in_the_admin(crew_member.user),
    )
    services.step_mark_missed(
        step=second, actor=crew_member.user, reason="Admitted overnight", accessor=in_the_admin(crew_member.user)
    )

    with connection.cursor() as cursor:
        cursor.execute("SELECT missed_reason FROM followups_followupstep WHERE id = %s", [second.pk])
        [missed] = cursor.fetchone()
        cursor.execute("SELECT reason FROM followups_stepevent WHERE step_id = %s AND reason <> ''", [first.pk])
        [moved] = cursor.fetchone()
    assert is_sealed(missed) and "Admitted" not in missed
    assert is_sealed(moved) and "detox" not in moved
    assert FollowUpStep.objects.get(pk=second.pk).missed_reason == "Admitted overnight"
    assert StepEvent.objects.get(step=first, action="rescheduled").reason == "In detox until Friday"
