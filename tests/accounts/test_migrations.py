from __future__ import annotations

import importlib

import pytest
from django.db import connection
from django.db.migrations.executor import MigrationExecutor
from django_celery_beat.models import IntervalSchedule, PeriodicTask, PeriodicTasks

pytestmark = pytest.mark.django_db

FORGET_RETIRED_ENTRY = "0004_forget_the_ended_tokens_beat_entry"


def test_the_retired_name_of_the_token_prune_is_forgotten_and_a_running_beat_told() -> None:
    every_day = IntervalSchedule.objects.create(every=1, period=IntervalSchedule.DAYS)
    PeriodicTask.objects.create(
        name="prune-ended-tokens", task="apps.accounts.tasks.prune_ended_tokens", interval=every_day
    )
    PeriodicTask.objects.create(
        name="prune-rotated-tokens", task="apps.accounts.tasks.prune_rotated_tokens", interval=every_day
    )
    PeriodicTasks.objects.filter(ident=1).delete()
    migration = importlib.import_module(f"apps.accounts.migrations.{FORGET_RETIRED_ENTRY}")
    # The models as the migration sees them: no signal of the real models fires.
    historical = MigrationExecutor(connection).loader.project_state(("accounts", FORGET_RETIRED_ENTRY)).apps

    migration.forget_retired_entry(historical, None)

    assert list(PeriodicTask.objects.values_list("name", flat=True)) == ["prune-rotated-tokens"]
    assert PeriodicTasks.objects.filter(ident=1).exists()
