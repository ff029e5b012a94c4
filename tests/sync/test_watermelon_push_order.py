"""A WatermelonDB push sends its changes table by table, in no order of its own: they apply
in the registry's order, each type after the types its records refer to."""

from __future__ import annotations

import uuid

from django.db import models

from apps.care.models import ClinicalNote, Encounter, Person, Referral, ReferralOutcomeEvent
from apps.sync import registry
from tests.conftest import CrewMember
from tests.sync.helpers import now_iso, sync_client


def _created(*records: dict[str, object]) -> dict[str, list[object]]:
    return {"created": list(records), "updated": [], "deleted": []}


def test_records_made_together_offline_apply_parents_first_whatever_the_tables_names(
    crew_member: CrewMember,
) -> None:
    unit_id = str(crew_member.unit.pk)
    person, visit, note, referral, outcome = (str(uuid.uuid4()) for _ in range(5))
    # Alphabetically, encounters come before persons and referral_outcomes before referrals.
    changes = {
        "encounters": _created({"id": visit, "unit_id": unit_id, "person_id": person, "started_at": now_iso()}),
        "notes": _created({"id": note, "encounter_id": visit, "body": "Calm; safety plan made."}),
        "persons": _created({"id": person, "unit_id": unit_id, "given_name": "Ana"}),
        "referral_outcomes": _created(
            {"id": outcome, "referral_id": referral, "outcome": "scheduled", "observed_at": now_iso()}
        ),
        "referrals": _created({"id": referral, "encounter_id": visit, "service_type": "outpatient_mental_health"}),
    }

    response = sync_client(crew_member).post(
        "/api/v1/sync/watermelon/push/", {"changes": changes, "lastPulledAt": None}, format="json"
    )

    assert response.status_code == 200, response.content
    assert response.json()["experimentalRejectedIds"] == {}
    assert Encounter.objects.get(pk=visit).person_id == uuid.UUID(person)
    assert Person.objects.filter(pk=person).exists()
    assert ClinicalNote.objects.filter(pk=note, encounter_id=visit).exists()
    assert Referral.objects.get(pk=referral).status == "scheduled"
    assert ReferralOutcomeEvent.objects.filter(pk=outcome).exists()


def test_every_synced_type_is_registered_after_the_types_its_records_refer_to() -> None:
    synced_models = {synced_type.model for synced_type in registry.in_registration_order()}
    registered: set[type[models.Model]] = set()
    for synced_type in registry.in_registration_order():
        for model_field in synced_type.model._meta.get_fields():
            target = model_field.related_model if isinstance(model_field, models.ForeignKey) else None
            if target in synced_models and target is not synced_type.model:
                assert target in registered, f"{synced_type.name} is registered before {target.__name__}"
        registered.add(synced_type.model)
