"""The caller's description of the crisis and the unserved note are stored sealed."""

from __future__ import annotations

import pytest
from django.db import IntegrityError, connection, transaction
from django.utils import timezone

from apps.accounts.models import Program
from apps.common.encryption import is_sealed
from apps.dispatch import services
from apps.dispatch.models import Incident, UnservedReason
from tests.conftest import CrewMember
from tests.dispatch.factories import make_incident

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
