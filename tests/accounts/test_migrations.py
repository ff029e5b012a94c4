from __future__ import annotations

import importlib

import pytest
from django.apps import apps as django_apps
from django_celery_beat.models import IntervalSchedule, PeriodicTask

pytestmark = pytest.mark.django_db


def test_the_retired_name_of_the_token_prune_is_forgotten_by_the_database_scheduler() -> None:
    every_day = IntervalSchedule.objects.create(every=1, period=IntervalSchedule.DAYS)
    PeriodicTask.objects.create(
        name="prune-ended-tokens", task="apps.accounts.tasks.prune_ended_tokens", interval=every_day
    )
    PeriodicTask.objects.create(
        name="prune-rotated-tokens", task="apps.accounts.tasks.prune_rotated_tokens", interval=every_day
    )
    migration = importlib.import_module("apps.accounts.migrations.0004_forget_the_ended_tokens_beat_entry")

    migration.forget_retired_entry(django_apps, None)

    assert list(PeriodicTask.objects.values_list("name", flat=True)) == ["prune-rotated-tokens"]
