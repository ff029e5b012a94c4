from __future__ import annotations

import importlib
import uuid

from django.db import connection
from django.db.migrations.executor import MigrationExecutor
from django.utils import timezone

from apps.accounts.models import ProgramDeparture
from apps.sync.models import Mutation
from tests.accounts.factories import ProgramFactory
from tests.conftest import CrewMember, make_crew_member
from tests.sync.helpers import SimDevice, encounter_fields

NAME_THEM_REVIEWED = "0019_fill_dismiss_code_reviewed"
DEPARTURES_MIGRATION = "0020_departures_found_and_outsiders_refiled"


def test_the_changes_set_aside_before_the_code_was_kept_are_named_set_aside_after_review(
    crew_member: CrewMember,
) -> None:
    """Before ``dismiss_code``, only a supervisor set a change aside, after review."""
    device = SimDevice(crew_member)
    misspelt = [
        {**device.mutation("create", "care.encounter", record_id, encounter_fields(crew_member)), "note": "x"}
        for record_id in ("6f1c6a80-52a8-4c4e-9f57-0f3bb2a6a0a1", "6f1c6a80-52a8-4c4e-9f57-0f3bb2a6a0a2")
    ]
    assert [result["status"] for result in device.push(*misspelt)] == ["quarantined", "quarantined"]
    set_aside, waiting = Mutation.objects.order_by("id")
    Mutation.objects.filter(pk=set_aside.pk).update(
        dismissed_at=timezone.now(), dismissed_by=crew_member.user, dismiss_reason="Sent twice", dismiss_code=""
    )
    migration = importlib.import_module(f"apps.sync.migrations.{NAME_THEM_REVIEWED}")
    historical = MigrationExecutor(connection).loader.project_state(("sync", NAME_THEM_REVIEWED)).apps

    migration.name_them_reviewed(historical, None)

    assert list(Mutation.objects.order_by("id").values_list("pk", "dismiss_code")) == [
        (set_aside.pk, "reviewed"),
        (waiting.pk, ""),
    ]


def test_departures_from_before_they_were_kept_are_found_and_what_outsiders_sent_is_filed_anew(
    crew_member: CrewMember,
) -> None:
    boston = ProgramFactory.create(slug="boston-street", name="Boston Street")
    stayer, leaver, rider = make_crew_member(boston), make_crew_member(boston), make_crew_member(boston)
    boston_record = uuid.uuid4()
    for member, record_id in ((stayer, uuid.uuid4()), (leaver, boston_record)):
        device = SimDevice(member)
        [created] = device.push(device.mutation("create", "care.encounter", record_id, encounter_fields(member)))
        assert created["status"] == "applied"
    # Refused: no sign of ever having been in Boston; filed there, as the rule was.
    outsider = SimDevice(crew_member)
    [refused] = outsider.push(outsider.mutation("update", "care.encounter", boston_record, {"location": "x"}, 1))
    assert refused["status"] == "quarantined"
    Mutation.objects.filter(user=crew_member.user).update(program=boston)
    leaver.user.unit_memberships.all().delete()  # off the crew: known only by what they wrote
    for member in (leaver, rider):
        member.user.memberships.all().delete()
    timed = ProgramDeparture.objects.get(user=leaver.user)
    ProgramDeparture.objects.all().delete()  # as before departures were kept
    migration = importlib.import_module(f"apps.sync.migrations.{DEPARTURES_MIGRATION}")

    with connection.cursor() as cursor:
        cursor.execute(migration.FIND_DEPARTURES)
        cursor.execute(migration.REFILE_OUTSIDERS)

    assert set(ProgramDeparture.objects.values_list("user", "program", "left_at")) == {
        (leaver.user.pk, boston.pk, None),
        (rider.user.pk, boston.pk, None),
    }
    assert list(Mutation.objects.filter(user=crew_member.user).values_list("program", flat=True)) == [
        crew_member.unit.program_id
    ]
    ProgramDeparture.objects.create(user=stayer.user, program=crew_member.unit.program, left_at=timed.left_at)
    with connection.cursor() as cursor:
        cursor.execute(migration.FORGET_FOUND_DEPARTURES)
    assert list(ProgramDeparture.objects.values_list("user", flat=True)) == [stayer.user.pk]
