"""A contact attempt's notes are clinical text: stored sealed, read back as plaintext."""

from __future__ import annotations

import uuid

import pytest
from django.db import connection

from apps.common.encryption import is_sealed
from apps.followups.models import ContactAttempt
from tests.care.factories import pushed
from tests.conftest import CrewMember
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
