"""Key rotation end to end: a new key in front, `reseal_health_information`, the old key gone."""

from __future__ import annotations

import importlib
import io
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from cryptography.fernet import Fernet
from django.apps import apps as django_apps
from django.core.management import CommandError, call_command
from django.db import connection

from apps.care.models import ClinicalNote, Encounter
from apps.common import resealing
from apps.common.encryption import SEALED_PREFIX, UnreadableHealthInformation, is_sealed, unseal
from tests.care.factories import encounter, pushed
from tests.conftest import CrewMember

pytestmark = pytest.mark.django_db

OLD_KEY = Fernet.generate_key().decode()
NEW_KEY = Fernet.generate_key().decode()


def raw(table: str, column: str, record_id: Any) -> str:
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT {column} FROM {table} WHERE id = %s", [record_id])  # noqa: S608 — fixed names
        return str(cursor.fetchone()[0])


def reseal(*args: str) -> str:
    out = io.StringIO()
    call_command("reseal_health_information", *args, stdout=out)
    return out.getvalue()


@pytest.fixture
def hook_calls() -> Iterator[list[str]]:
    calls: list[str] = []

    def reseal_copies() -> int:
        calls.append("called")
        return 7

    resealing.register_reseal_hook(reseal_copies)
    yield calls
    resealing._hooks.remove(reseal_copies)


def test_the_command_finds_every_encrypted_column_without_knowing_the_apps():
    found = {
        (model._meta.label, field.name)
        for model in resealing.models_with_encrypted_fields()
        for field in resealing.encrypted_fields(model)
    }
    assert found == {
        ("care.ClinicalNote", "body"),
        ("care.Encounter", "assessment"),
        ("care.Encounter", "location"),
        ("care.Referral", "reason"),
        ("care.ReferralOutcomeEvent", "details"),
        ("care.ReferralTaskEvent", "reason"),
        ("dispatch.Assignment", "end_reason"),
        ("dispatch.Incident", "nature"),
        ("dispatch.Incident", "override_reason"),
        ("dispatch.Incident", "unserved_note"),
        ("dispatch.TimelineEvent", "reason"),
        ("followups.ContactAttempt", "notes"),
        ("followups.FollowUpStep", "missed_reason"),
        ("followups.StepEvent", "reason"),
        ("sync.Mutation", "dismiss_reason"),
    }


def test_after_rotation_and_reseal_the_old_key_can_go(settings, crew_member: CrewMember, hook_calls: list[str]):
    # given records sealed with the old key
    settings.FIELD_ENCRYPTION_KEYS = [OLD_KEY]
    encounter_ids = [encounter(crew_member, assessment=f"Assessment {n}") for n in range(5)]
    note_id = uuid.uuid4()
    fields = {"encounter_id": str(encounter_ids[0]), "body": "A note from last year"}
    assert pushed(crew_member, "care.note", fields, record_id=note_id)["status"] == "applied"
    sealed_with_old = raw("care_encounter", "assessment", encounter_ids[0])

    # when a new key goes in front and the command runs (in small batches, to cross batch edges)
    settings.FIELD_ENCRYPTION_KEYS = [NEW_KEY, OLD_KEY]
    output = reseal("--batch-size", "2")

    # then every value is sealed anew, the registered hook ran, and the counts are printed
    assert raw("care_encounter", "assessment", encounter_ids[0]) != sealed_with_old
    assert "care.Encounter (location, assessment): 10 resealed, 0 sealed from plaintext, 0 already current" in output
    assert "care.ClinicalNote (body): 1 resealed" in output
    assert "reseal_copies: 7 resealed" in output
    assert hook_calls == ["called"]

    # and with the old key removed everything still reads
    settings.FIELD_ENCRYPTION_KEYS = [NEW_KEY]
    assert sorted(Encounter.objects.filter(pk__in=encounter_ids).values_list("assessment", flat=True)) == [
        f"Assessment {n}" for n in range(5)
    ]
    assert ClinicalNote.objects.get(pk=note_id).body == "A note from last year"
    with pytest.raises(UnreadableHealthInformation):
        unseal(sealed_with_old)


def test_running_it_again_changes_nothing(settings, crew_member: CrewMember):
    settings.FIELD_ENCRYPTION_KEYS = [NEW_KEY]
    encounter_id = encounter(crew_member, assessment="Calm, oriented")
    before = raw("care_encounter", "assessment", encounter_id)

    output = reseal()

    assert "care.Encounter (location, assessment): 0 resealed, 0 sealed from plaintext, 2 already current" in output
    assert raw("care_encounter", "assessment", encounter_id) == before


def test_values_an_earlier_release_sealed_with_fernet_are_converted_with_the_same_key(
    settings, crew_member: CrewMember
):
    settings.FIELD_ENCRYPTION_KEYS = [NEW_KEY]
    encounter_id = encounter(crew_member, assessment="Sealed before the upgrade")
    with connection.cursor() as cursor:  # as the earlier release stored it
        cursor.execute(
            "UPDATE care_encounter SET assessment = %s WHERE id = %s",
            [Fernet(NEW_KEY).encrypt(b"Sealed before the upgrade").decode(), encounter_id],
        )
    assert Encounter.objects.get(pk=encounter_id).assessment == "Sealed before the upgrade"

    output = reseal()

    assert "care.Encounter (location, assessment): 1 resealed, 0 sealed from plaintext, 1 already current" in output
    assert raw("care_encounter", "assessment", encounter_id).startswith(SEALED_PREFIX)
    assert Encounter.objects.get(pk=encounter_id).assessment == "Sealed before the upgrade"


def test_a_value_changed_meanwhile_is_not_overwritten(settings, monkeypatch, crew_member: CrewMember):
    """The write-back is a compare-and-set: an edit between read and write wins."""
    settings.FIELD_ENCRYPTION_KEYS = [OLD_KEY]
    encounter_id = encounter(crew_member, assessment="Old text")
    settings.FIELD_ENCRYPTION_KEYS = [NEW_KEY, OLD_KEY]
    original_batches = resealing._batches

    def batches_then_edit(*args: Any, **kwargs: Any) -> Iterator[list[tuple[Any, ...]]]:
        for rows in original_batches(*args, **kwargs):
            Encounter.objects.filter(pk=encounter_id).update(assessment="Edited meanwhile")
            yield rows

    # The edit lands between the command's read and its write, as a clinician's save would.
    monkeypatch.setattr(resealing, "_batches", batches_then_edit)
    count = resealing.reseal_model(Encounter)

    assert count.skipped == 1
    assert Encounter.objects.get(pk=encounter_id).assessment == "Edited meanwhile"


def test_plaintext_from_before_encryption_is_sealed_by_the_data_migration(crew_member: CrewMember, program, settings):
    # given rows written in plaintext, as they were before the columns were encrypted
    settings.FIELD_ENCRYPTION_KEYS = [NEW_KEY]
    encounter_id = encounter(crew_member, assessment="placeholder")
    with connection.cursor() as cursor:
        cursor.execute("UPDATE care_encounter SET assessment = 'Plain old text' WHERE id = %s", [encounter_id])
    migration = importlib.import_module("apps.care.migrations.0005_seal_existing_health_information")

    # when the data migration runs (twice: it is idempotent)
    migration.seal_existing(django_apps, None)
    once = raw("care_encounter", "assessment", encounter_id)
    migration.seal_existing(django_apps, None)

    # then the value is sealed, read back as it was, and untouched by the second run
    assert is_sealed(once)
    assert raw("care_encounter", "assessment", encounter_id) == once
    assert Encounter.objects.get(pk=encounter_id).assessment == "Plain old text"

    # and the reverse migration opens it again
    migration.open_existing(django_apps, None)
    assert raw("care_encounter", "assessment", encounter_id) == "Plain old text"


def test_a_value_sealed_with_an_unknown_key_stops_the_command_loudly(settings, crew_member: CrewMember):
    settings.FIELD_ENCRYPTION_KEYS = [OLD_KEY]
    encounter(crew_member, assessment="Sealed with a key that was dropped too early")
    settings.FIELD_ENCRYPTION_KEYS = [NEW_KEY]
    with pytest.raises(UnreadableHealthInformation):
        reseal()


def test_a_batch_size_below_one_is_refused():
    with pytest.raises(CommandError, match="batch-size"):
        reseal("--batch-size", "0")
