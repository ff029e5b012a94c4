"""Seed the default triage policy every program starts with (issue 3's defaults).

First matching rule wins; a program that wants different rules gets its own policy.
"""

from django.db import migrations

DEFAULT_POLICY = "Default triage policy"

RULES = [
    ({"violence_in_progress": True}, {}, "police", "Violence in progress: police respond"),
    ({"medical_emergency": True}, {}, "ems", "Medical emergency: EMS respond"),
    ({"mental_health_nexus": False}, {}, "police", "No mental-health nexus: not a crisis-team call"),
    (
        {"mental_health_nexus": True},
        {"weapon": True, "imminent_self_harm": True},
        "co_response",
        "Mental-health nexus with a safety risk: co-response (officer + clinician)",
    ),
    (
        {"mental_health_nexus": True},
        {"acuity": "severe", "known_high_risk": True},
        "mobile_treatment",
        "Severe or known high-risk: mobile treatment unit",
    ),
    ({"mental_health_nexus": True, "acuity": "low"}, {}, "community_response", "Low acuity: community response"),
]


def seed(apps, schema_editor):
    TriagePolicy = apps.get_model("dispatch", "TriagePolicy")
    TriageRule = apps.get_model("dispatch", "TriageRule")
    policy, created = TriagePolicy.objects.get_or_create(
        program=None,
        defaults={
            "name": DEFAULT_POLICY,
            "fallback_response": "emt_clinician",
            "fallback_reason": "Mental-health nexus, no safety risk: EMT + mental-health clinician",
        },
    )
    if created:
        TriageRule.objects.bulk_create(
            TriageRule(policy=policy, position=(index + 1) * 10, when_all=when_all, when_any=when_any,
                       response=response, reason=reason)
            for index, (when_all, when_any, response, reason) in enumerate(RULES)
        )


def unseed(apps, schema_editor):
    apps.get_model("dispatch", "TriagePolicy").objects.filter(program=None, name=DEFAULT_POLICY).delete()


class Migration(migrations.Migration):
    dependencies = [("dispatch", "0001_incidents_assignments")]

    operations = [migrations.RunPython(seed, unseed)]
