"""Clinical text is stored sealed: the database holds ciphertext, the application plaintext."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from django.db import connection

from apps.care import services
from apps.care.models import ClinicalNote, Encounter, Referral, ReferralOutcomeEvent, ReferralTaskEvent
from apps.common.encryption import is_sealed
from tests.care.factories import encounter, pushed
from tests.conftest import CrewMember, in_the_admin
from tests.sync.helpers import now_iso

pytestmark = pytest.mark.django_db


def stored(table: str, column: str, record_id: Any) -> str:
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT {column} FROM {table} WHERE id = %s", [record_id])  # noqa: S608 — fixed names
        return str(cursor.fetchone()[0])


def test_every_clinical_text_column_holds_ciphertext_and_reads_back_as_plaintext(crew_member: CrewMember):
    # given an encounter, a signed note with an addendum, a referral, an outcome and a task step
    encounter_id = encounter(
        crew_member, assessment="Hearing voices since Tuesday; denies intent.", location="Behind 210 Pleasant Ave"
    )
    note_id, addendum_id, referral_id, outcome_id = uuid.uuid4(), uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    note = {"encounter_id": str(encounter_id), "body": "Agreed a safety plan with sister.", "signed_at": now_iso()}
    assert pushed(crew_member, "care.note", note, record_id=note_id)["status"] == "applied"
    addendum = {"encounter_id": str(encounter_id), "amends_id": str(note_id), "body": "Sister's number corrected."}
    assert pushed(crew_member, "care.note", addendum, record_id=addendum_id)["status"] == "applied"
    referral = {"encounter_id": str(encounter_id), "service_type": "outpatient_mental_health", "reason": "Psychosis"}
    assert pushed(crew_member, "care.referral", referral, record_id=referral_id)["status"] == "applied"
    outcome = {
        "referral_id": str(referral_id),
        "outcome": "scheduled",
        "observed_at": now_iso(),
        "details": "Clozapine",
    }
    assert pushed(crew_member, "care.referral_outcome", outcome, record_id=outcome_id)["status"] == "applied"
    task_event = services.referral_task_status_change(
        referral=Referral.objects.get(pk=referral_id),
        to_status="rejected",
        reason="Needs inpatient care",
        actor=crew_member.user,
        accessor=in_the_admin(crew_member.user),
    )

    # then the tables hold no plaintext
    columns = [
        ("care_encounter", "assessment", encounter_id, "Hearing voices"),
        ("care_encounter", "location", encounter_id, "Pleasant"),
        ("care_clinicalnote", "body", note_id, "safety plan"),
        ("care_clinicalnote", "body", addendum_id, "Sister"),
        ("care_referral", "reason", referral_id, "Psychosis"),
        ("care_referraloutcomeevent", "details", outcome_id, "Clozapine"),
        ("care_referraltaskevent", "reason", task_event.pk, "inpatient"),
    ]
    for table, column, record_id, plaintext in columns:
        value = stored(table, column, record_id)
        assert is_sealed(value), (table, column)
        assert plaintext not in value

    # and the ORM hands back the plaintext
    assert Encounter.objects.get(pk=encounter_id).assessment == "Hearing voices since Tuesday; denies intent."
    assert Encounter.objects.get(pk=encounter_id).location == "Behind 210 Pleasant Ave"
    assert ClinicalNote.objects.get(pk=note_id).body == "Agreed a safety plan with sister."
    assert ClinicalNote.objects.get(pk=addendum_id).body == "Sister's number corrected."
    assert Referral.objects.get(pk=referral_id).reason == "Psychosis"
    assert ReferralOutcomeEvent.objects.get(pk=outcome_id).details == "Clozapine"
    assert ReferralTaskEvent.objects.get(pk=task_event.pk).reason == "Needs inpatient care"


def test_an_empty_assessment_stays_empty_in_the_database(crew_member: CrewMember):
    encounter_id = encounter(crew_member, assessment="")
    assert stored("care_encounter", "assessment", encounter_id) == ""
