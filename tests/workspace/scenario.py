"""One program's working day, made through the domain services the way the field makes it:
an incident offered and not acknowledged, a crew on scene that missed its check-in, an
eligible call closed unserved, an encounter with a referral and its follow-up steps, a
sync conflict on the encounter's assessment, and a change of it the server kept but did not
apply."""

from __future__ import annotations

import datetime as dt
import uuid
from dataclasses import dataclass

from django.utils import timezone

from apps.accounts.models import Program, Role, User
from apps.dispatch import services as dispatch
from apps.dispatch.models import Assignment, AssignmentStatus, Incident, UnservedReason
from apps.followups.models import FollowUpStep
from apps.sync.models import Conflict
from tests.care.factories import encounter, pushed
from tests.conftest import CrewMember, make_crew_member
from tests.dispatch.factories import fast_timing, make_incident, make_staff
from tests.followups.factories import case_manager, referral, steps_of
from tests.teams.factories import UnitFactory


@dataclass
class Workday:
    program: Program
    case_manager: User
    supervisor: User
    crew: CrewMember
    dispatcher: CrewMember
    unacknowledged: Assignment
    missed_checkin: Assignment
    unserved: Incident
    referral_id: uuid.UUID
    steps: list[FollowUpStep]
    conflict: Conflict


def staff(user: User) -> User:
    user.is_staff = True
    user.save(update_fields=["is_staff"])
    return user


def workday(program: Program) -> Workday:
    fast_timing(program, checkin=600)
    dispatcher = make_staff(program)
    crew = make_crew_member(program)
    manager = case_manager(crew)
    supervisor = make_staff(program, role=Role.SUPERVISOR)

    # A crew on scene that then misses its safety check-in (the sweep raises the alert).
    on_scene = dispatch.assignment_offer(
        incident=make_incident(program, dispatcher), unit=UnitFactory.create(program=program), actor=dispatcher.user
    )
    rider = make_crew_member(program, unit=on_scene.unit)
    dispatch.assignment_acknowledge(assignment_id=on_scene.pk, user=rider.user, device=rider.device)
    dispatch.assignment_update_status(
        assignment_id=on_scene.pk, user=rider.user, device=rider.device, status=AssignmentStatus.ON_SCENE
    )
    dispatch.sweep_deadlines(now=timezone.now() + dt.timedelta(seconds=700))

    unacknowledged = dispatch.assignment_offer(
        incident=make_incident(program, dispatcher), unit=UnitFactory.create(program=program), actor=dispatcher.user
    )
    unserved = dispatch.incident_close(
        incident=make_incident(program, dispatcher),
        actor=dispatcher.user,
        device=dispatcher.device,
        unserved_reason=UnservedReason.NO_UNIT_AVAILABLE,
    )

    referral_id = referral(crew)
    # Two devices of the unit edit the same clinical text from the same version: a conflict.
    teammate = make_crew_member(program, unit=crew.unit)
    encounter_id = encounter(crew, assessment="Calm, oriented.")
    first = pushed(
        crew, "care.encounter", {"assessment": "Agitated."}, op="update", record_id=encounter_id, base_version=1
    )
    late = pushed(
        teammate, "care.encounter", {"assessment": "Calm."}, op="update", record_id=encounter_id, base_version=1
    )
    assert (first["status"], late["status"]) == ("applied", "conflict"), (first, late)
    # A change whose disposition the server does not know: kept in quarantine for review.
    kept = pushed(
        crew, "care.encounter", {"disposition": "abducted"}, op="update", record_id=encounter_id, base_version=2
    )
    assert kept["status"] == "quarantined", kept

    return Workday(
        program=program,
        case_manager=staff(manager.user),
        supervisor=staff(supervisor.user),
        crew=crew,
        dispatcher=dispatcher,
        unacknowledged=unacknowledged,
        missed_checkin=Assignment.objects.get(pk=on_scene.pk),
        unserved=unserved,
        referral_id=referral_id,
        steps=steps_of(referral_id),
        conflict=Conflict.objects.get(record_id=encounter_id),
    )


@dataclass
class Casework:
    """A known person's follow-up: an encounter with a signed note and a referral, and its steps."""

    day: Workday
    person_id: uuid.UUID
    encounter_id: uuid.UUID
    note_id: uuid.UUID
    referral_id: uuid.UUID
    steps: list[FollowUpStep]

    def overdue_step(self) -> FollowUpStep:
        """The earliest open step past its due time, as the database has it now."""
        overdue = FollowUpStep.objects.filter(
            pk__in=[step.pk for step in self.steps], status="pending", due_at__lt=timezone.now()
        )
        found = overdue.order_by("due_at").first()
        assert found is not None, "the scenario's encounter ended days ago: a step is overdue"
        return found


def casework(day: Workday) -> Casework:
    crew = day.crew
    person_id = uuid.uuid4()
    person = {"unit_id": str(crew.unit.pk), "given_name": "Rosa", "family_name": "Diaz", "phone_number": "+12125550143"}
    assert pushed(crew, "care.person", person, record_id=person_id)["status"] == "applied"
    referral_id = referral(crew, encounter_fields={"person_id": str(person_id)}, service_name="Harlem Clinic")
    steps = steps_of(referral_id)
    encounter_id = steps[0].plan.encounter_id
    note_id = uuid.uuid4()
    note = {"encounter_id": str(encounter_id), "body": "Calm on arrival.", "signed_at": "2026-11-20T15:00:00+00:00"}
    assert pushed(crew, "care.note", note, record_id=note_id)["status"] == "applied"
    return Casework(day, person_id, encounter_id, note_id, referral_id, steps)
