from __future__ import annotations

from typing import Any

import pytest
from django.db import IntegrityError, transaction

from apps.accounts.models import Program
from apps.dispatch import services
from apps.dispatch.models import Incident, Response, TriagePolicy, TriageRule
from tests.conftest import CrewMember
from tests.dispatch.factories import make_incident, screen


@pytest.mark.parametrize(
    ("answers", "expected"),
    [
        ({}, Response.EMT_CLINICIAN),
        ({"weapon": True}, Response.CO_RESPONSE),
        ({"imminent_self_harm": True}, Response.CO_RESPONSE),
        ({"acuity": "severe"}, Response.MOBILE_TREATMENT),
        ({"known_high_risk": True}, Response.MOBILE_TREATMENT),
        ({"acuity": "low"}, Response.COMMUNITY_RESPONSE),
        ({"violence_in_progress": True}, Response.POLICE),
        ({"medical_emergency": True}, Response.EMS),
        ({"mental_health_nexus": False}, Response.POLICE),
        ({"weapon": True, "acuity": "low"}, Response.CO_RESPONSE),  # safety risk outranks low acuity
        ({"violence_in_progress": True, "medical_emergency": True}, Response.POLICE),
    ],
)
def test_default_policy_follows_the_programs(program: Program, answers: dict[str, Any], expected: str) -> None:
    full = screen() | {"acuity": "moderate", "known_high_risk": False, "substance_use": False} | answers
    decision = services.triage(program_id=program.pk, answers=full)

    assert decision.response == expected
    assert decision.reasons and decision.policy.program_id is None


def test_incident_records_the_recommendation_and_its_reasons(program: Program, dispatcher: CrewMember) -> None:
    incident = make_incident(program, dispatcher, weapon=True)

    assert incident.recommended_response == incident.chosen_response == Response.CO_RESPONSE
    assert incident.triage_reasons == [
        "Mental-health nexus with a safety risk: co-response (officer + clinician) "
        "(mental_health_nexus=True, weapon=True)"
    ]


def test_a_program_changes_its_triage_by_data_not_code(program: Program, dispatcher: CrewMember) -> None:
    policy = TriagePolicy.objects.create(
        program=program, name="Harlem pilot", fallback_response=Response.EMT_CLINICIAN, fallback_reason="default"
    )
    TriageRule.objects.create(
        policy=policy,
        position=1,
        when_all={"substance_use": True},
        response=Response.COMMUNITY_RESPONSE,
        reason="Peers lead on substance use",
    )

    incident = make_incident(program, dispatcher, substance_use=True)

    assert incident.recommended_response == Response.COMMUNITY_RESPONSE
    assert incident.triage_policy_id == policy.pk
    assert incident.triage_reasons == ["Peers lead on substance use (substance_use=True)"]


def test_rule_refuses_unknown_answers() -> None:
    from django.core.exceptions import ValidationError

    rule = TriageRule(when_all={"astrology": True}, response=Response.POLICE, reason="no")
    with pytest.raises(ValidationError):
        rule.clean()


def test_dispatcher_overrides_with_a_reason(program: Program, dispatcher: CrewMember) -> None:
    incident = make_incident(program, dispatcher)
    url = f"/api/v1/dispatch/incidents/{incident.pk}/override/"

    without = dispatcher.client().post(url, {"response": "co_response"}, format="json")
    with_reason = dispatcher.client().post(
        url, {"response": "co_response", "reason": "Caller mentioned a knife"}, format="json"
    )

    assert without.status_code == 400 and without.json()["errors"][0]["field"] == "reason"
    assert with_reason.status_code == 200
    assert with_reason.json()["triage"] | {"reasons": None} == {
        "recommended_response": "emt_clinician",
        "reasons": None,
        "chosen_response": "co_response",
        "override_reason": "Caller mentioned a knife",
        "eligible": True,
    }
    assert incident.timeline.filter(kind="overridden", actor=dispatcher.user).count() == 1


def test_every_override_event_carries_its_reason_even_a_return_to_triage_without_one(
    program: Program, dispatcher: CrewMember
) -> None:
    incident = make_incident(program, dispatcher)
    url = f"/api/v1/dispatch/incidents/{incident.pk}/override/"
    dispatcher.client().post(url, {"response": "co_response", "reason": "Caller mentioned a knife"}, format="json")
    dispatcher.client().post(url, {"response": "emt_clinician"}, format="json")

    timeline = dispatcher.client().get(f"/api/v1/dispatch/incidents/{incident.pk}/").json()["timeline"]

    overrides = [event["detail"] for event in timeline if event["kind"] == "overridden"]
    assert [detail["reason"] for detail in overrides] == ["Caller mentioned a knife", ""]


def test_the_database_refuses_an_override_without_a_reason(program: Program, dispatcher: CrewMember) -> None:
    incident = make_incident(program, dispatcher)

    with pytest.raises(IntegrityError), transaction.atomic():
        Incident.objects.filter(pk=incident.pk).update(chosen_response=Response.POLICE)
