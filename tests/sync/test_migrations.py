from __future__ import annotations

import importlib

from django.db import connection
from django.db.migrations.executor import MigrationExecutor
from django.utils import timezone

from apps.sync.models import Mutation
from tests.conftest import CrewMember
from tests.sync.helpers import SimDevice, encounter_fields

NAME_THEM_REVIEWED = "0019_fill_dismiss_code_reviewed"


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
