from __future__ import annotations

import importlib
import uuid

from django.db import connection
from django.db.migrations.executor import MigrationExecutor
from django.utils import timezone

from apps.accounts.models import ProgramDeparture, Role
from apps.audit.models import AuditEvent
from apps.sync.models import Mutation, ScopeChange, UserScopeState
from apps.sync.scopes import program_role_scope, unit_scope
from tests.accounts.factories import ProgramFactory, UserFactory
from tests.conftest import CrewMember, make_crew_member
from tests.sync.helpers import SimDevice, encounter_fields
from tests.teams.factories import UnitFactory, UnitMemberFactory

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


def test_departures_from_before_they_were_kept_are_found_by_every_sign_of_having_been_there(
    crew_member: CrewMember,
) -> None:
    boston = ProgramFactory.create(slug="boston-street", name="Boston Street")
    boston_unit = UnitFactory.create(program=boston)
    writer, merger = make_crew_member(boston, unit=boston_unit), make_crew_member(boston, unit=boston_unit)
    boston_record = uuid.uuid4()
    writer_device, merger_device = SimDevice(writer), SimDevice(merger)
    writer_device.push(writer_device.mutation("create", "care.encounter", boston_record, encounter_fields(writer)))
    [merged] = merger_device.push(
        merger_device.mutation("update", "care.encounter", boston_record, {"location": "x"}, 1)
    )
    assert merged["status"] == "applied"
    Mutation.objects.filter(user=merger.user).update(status="conflict")
    served, gained, audited, superuser, crew_only = (UserFactory.create() for _ in range(5))
    superuser.is_superuser = True
    superuser.save()
    UserScopeState.objects.update_or_create(user=served, defaults={"scopes": [unit_scope(boston_unit.pk)]})
    ScopeChange.objects.create(user=gained, scope=program_role_scope(boston.pk, Role.CASE_MANAGER), gained=True)
    deleted_program = uuid.uuid4()  # the trail keeps the id of a program since deleted
    for actor, program_id in ((audited, boston.pk), (superuser, boston.pk), (audited, deleted_program)):
        AuditEvent.objects.create(
            actor_id=actor.pk,
            program_id=program_id,
            action="read",
            channel="api",
            record_type="x",
            record_id=uuid.uuid4(),
        )
    UnitMemberFactory.create(unit=boston_unit, user=crew_only)  # a crew place grants nothing without a role
    for member in (writer, merger):
        member.user.memberships.all().delete()
    ProgramDeparture.objects.all().delete()  # as before departures were kept
    migration = importlib.import_module(f"apps.sync.migrations.{DEPARTURES_MIGRATION}")

    with connection.cursor() as cursor:
        cursor.execute(migration.FIND_DEPARTURES)

    assert set(ProgramDeparture.objects.values_list("user", "program", "left_at")) == {
        (user.pk, boston.pk, None) for user in (writer.user, merger.user, served, gained, audited)
    }


def test_what_outsiders_sent_is_filed_anew_where_the_push_files_it_now(crew_member: CrewMember) -> None:
    boston = ProgramFactory.create(slug="boston-street", name="Boston Street")
    owner = make_crew_member(boston)
    boston_record = uuid.uuid4()
    SimDevice(owner).push(SimDevice(owner).mutation("create", "care.encounter", boston_record, encounter_fields(owner)))
    cambridge_only = make_crew_member(ProgramFactory.create(slug="cambridge", name="Cambridge"))
    leaver = make_crew_member(boston)
    for outsider in (crew_member, cambridge_only, leaver):
        device = SimDevice(outsider)
        [refused] = device.push(device.mutation("update", "care.encounter", boston_record, {"location": "x"}, 1))
        assert refused["status"] == "quarantined"
    # Out of every program now: answered for by the one they left.
    left_for_none = cambridge_only.user.memberships.get().program_id
    cambridge_only.user.memberships.all().delete()
    leaver.user.memberships.all().delete()
    filed_before = Mutation.objects.filter(user=leaver.user).get().program_id
    Mutation.objects.exclude(user=leaver.user).update(program=boston)  # the rule before: the record's program
    migration = importlib.import_module(f"apps.sync.migrations.{DEPARTURES_MIGRATION}")

    with connection.cursor() as cursor:
        cursor.execute(migration.REFILE_OUTSIDERS)

    assert dict(Mutation.objects.filter(status="quarantined").values_list("user", "program")) == {
        crew_member.user.pk: crew_member.unit.program_id,
        cambridge_only.user.pk: left_for_none,
        leaver.user.pk: filed_before,
    }
    assert filed_before == boston.pk


def test_the_departures_found_are_forgotten_going_back_and_those_kept_since_stay(crew_member: CrewMember) -> None:
    boston = ProgramFactory.create(slug="boston-street", name="Boston Street")
    found, kept = UserFactory.create(), make_crew_member(boston)
    ProgramDeparture.objects.create(user=found, program=boston, left_at=None)
    kept.user.memberships.all().delete()
    migration = importlib.import_module(f"apps.sync.migrations.{DEPARTURES_MIGRATION}")

    with connection.cursor() as cursor:
        cursor.execute(migration.FORGET_FOUND_DEPARTURES)

    assert list(ProgramDeparture.objects.values_list("user", flat=True)) == [kept.user.pk]
