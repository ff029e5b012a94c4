"""Seal the health information stored in plaintext before these columns were encrypted.

Idempotent (sealed values are recognised and left alone) and batched; reversible.
"""

from __future__ import annotations

from typing import Any

from django.db import migrations

from apps.common.resealing import open_sealed, seal_plaintext

SEALED_COLUMNS = {
    "ContactAttempt": ["notes"],
    "FollowUpStep": ["missed_reason"],
    "StepEvent": ["reason"],
}


def seal_existing(apps: Any, schema_editor: Any) -> None:
    for model_name, field_names in SEALED_COLUMNS.items():
        seal_plaintext(apps.get_model("followups", model_name), field_names)


def open_existing(apps: Any, schema_editor: Any) -> None:
    for model_name, field_names in SEALED_COLUMNS.items():
        open_sealed(apps.get_model("followups", model_name), field_names)


class Migration(migrations.Migration):
    dependencies = [("followups", "0002_sealed_health_information")]

    operations = [migrations.RunPython(seal_existing, open_existing, elidable=True)]
