"""The demo's care records: what a crew's tablet documented over the last days.

They go in as a tablet's outbox would, through sync's push (versions, feed, follow-up plans,
audit), so the case manager's queues and the follow-up reminders have work in them when
the demo starts. The people and what is written about them are made up.

Times are relative to the first seed, and the tablet pushes once: a later start finds the
tablet and leaves the records as the demo left them.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any

from django.utils import timezone

from apps.accounts.models import Device, DevicePlatform, Program, User
from apps.accounts.services import device_register
from apps.care.models import Disposition, ReferralPriority, ReferralStatus
from apps.directory.models import ServiceType
from apps.sync.push import PushStatus, push_mutations
from apps.teams.models import Unit

DEMO_TABLET = "demo tablet"
# Record ids are derived from the program and the story, so each program's are its own.
_RECORD_IDS = uuid.UUID("5b7c1f1e-8d0a-4f43-9a55-3c1d6a0e2b71")


@dataclass(frozen=True)
class StoryReferral:
    service_type: ServiceType
    service_name: str
    reason: str
    priority: ReferralPriority = ReferralPriority.ROUTINE
    appointment_in_hours: int | None = None  # after the encounter ended
    # What the crew heard back before the demo started, if anything.
    outcome: ReferralStatus | None = None


@dataclass(frozen=True)
class Story:
    key: str
    given_name: str
    family_name: str
    date_of_birth: date | None
    ended_hours_ago: int
    location: str
    assessment: str
    disposition: Disposition
    note: str
    note_signed: bool = True
    referral: StoryReferral | None = None


STORIES: Sequence[Story] = (
    Story(
        key="outpatient",
        given_name="Dana",
        family_name="Whitfield",
        date_of_birth=date(1987, 3, 14),
        ended_hours_ago=80,
        location="Lobby of the residence",
        assessment="Low mood for three weeks since losing work; no plan or intent; sleeping poorly.",
        disposition=Disposition.REFERRED,
        note="Agreed a safety plan with the person and their sister. Wants to see someone this week.",
        referral=StoryReferral(
            ServiceType.OUTPATIENT_MENTAL_HEALTH,
            "Community counselling clinic (demo)",
            "Depressive symptoms, first contact with services.",
            appointment_in_hours=104,  # the day after the demo starts
            outcome=ReferralStatus.SCHEDULED,
        ),
    ),
    Story(
        key="peer",
        given_name="Luis",
        family_name="Ferreira",
        date_of_birth=date(1995, 11, 2),
        ended_hours_ago=30,
        location="Subway platform, uptown side",
        assessment="Anxious and disoriented after two nights without sleep; calmer after an hour with the team.",
        disposition=Disposition.REFERRED,
        note="Declined transport. Accepted a call from a peer worker tomorrow.",
        referral=StoryReferral(
            ServiceType.PEER_SUPPORT,
            "Peer support line (demo)",
            "Follow-up call after a night in crisis.",
            priority=ReferralPriority.URGENT,
        ),
    ),
    Story(
        key="resolved",
        given_name="Grace",
        family_name="Oyelaran",
        date_of_birth=None,
        ended_hours_ago=6,
        location="Corner store, at the counter",
        assessment="Distressed after an argument with her landlord; no risk to self or others.",
        disposition=Disposition.RESOLVED_ON_SCENE,
        note="Talked it through; she has her own counsellor. To be called tomorrow.",
        note_signed=False,
    ),
)


def care_stories_push(*, program: Program, unit: Unit, clinician: User) -> None:
    """Push the stories from the clinician's demo tablet, once."""
    if Device.objects.filter(user=clinician, name=DEMO_TABLET).exists():
        return
    device, _token, _raw = device_register(user=clinician, name=DEMO_TABLET, platform=DevicePlatform.ANDROID)
    now = timezone.now()
    mutations: list[dict[str, Any]] = []
    for story in STORIES:
        mutations += _story_mutations(story, program=program, unit=unit, now=now)
    for mutation_id, mutation in enumerate(mutations, start=1):
        mutation["mutation_id"] = mutation_id
    results = push_mutations(device=device, user=clinician, mutations=mutations, client_version="tandem-demo/1").results
    refused = [result for result in results if result["status"] != PushStatus.APPLIED]
    if refused:
        raise RuntimeError(f"The demo tablet's push was refused: {refused[0]}")


def _story_mutations(story: Story, *, program: Program, unit: Unit, now: datetime) -> list[dict[str, Any]]:
    def record_id(kind: str) -> str:
        return str(uuid.uuid5(_RECORD_IDS, f"{program.slug}/{story.key}/{kind}"))

    ended = now - timedelta(hours=story.ended_hours_ago)
    started = ended - timedelta(minutes=55)

    def create(record_type: str, kind: str, fields: dict[str, Any], observed: datetime) -> dict[str, Any]:
        return {
            "type": record_type,
            "id": record_id(kind),
            "op": "create",
            "base_version": None,
            "fields": fields,
            "observed_at": observed.isoformat(),
        }

    mutations = [
        create(
            "care.person",
            "person",
            {
                "unit_id": str(unit.pk),
                "given_name": story.given_name,
                "family_name": story.family_name,
                "date_of_birth": story.date_of_birth.isoformat() if story.date_of_birth else None,
            },
            started,
        ),
        create(
            "care.encounter",
            "encounter",
            {
                "unit_id": str(unit.pk),
                "person_id": record_id("person"),
                "started_at": started.isoformat(),
                "ended_at": ended.isoformat(),
                "location": story.location,
                "assessment": story.assessment,
                "disposition": story.disposition,
            },
            ended,
        ),
        create(
            "care.note",
            "note",
            {
                "encounter_id": record_id("encounter"),
                "body": story.note,
                "signed_at": ended.isoformat() if story.note_signed else None,
            },
            ended,
        ),
    ]
    referral = story.referral
    if referral is not None:
        appointment = ended + timedelta(hours=referral.appointment_in_hours) if referral.appointment_in_hours else None
        mutations.append(
            create(
                "care.referral",
                "referral",
                {
                    "encounter_id": record_id("encounter"),
                    "service_type": referral.service_type,
                    "service_name": referral.service_name,
                    "reason": referral.reason,
                    "priority": referral.priority,
                    "appointment_at": appointment.isoformat() if appointment else None,
                    "consent_to_share": True,
                },
                ended,
            )
        )
        if referral.outcome is not None:
            heard_back = ended + timedelta(hours=2)
            mutations.append(
                create(
                    "care.referral_outcome",
                    "outcome",
                    {
                        "referral_id": record_id("referral"),
                        "outcome": referral.outcome,
                        "observed_at": heard_back.isoformat(),
                        "details": "The clinic called back with a time.",
                    },
                    heard_back,
                )
            )
    return mutations
