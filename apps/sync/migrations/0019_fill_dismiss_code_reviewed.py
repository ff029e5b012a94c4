"""Name why the mutations set aside before ``dismiss_code`` were: a supervisor, after review.

They are few (a supervisor set each aside by hand), and all quarantined: the rows the
ledger's partial indexes of quarantined rows hold. Reversible.
"""

from __future__ import annotations

from typing import Any

from django.db import migrations


def name_them_reviewed(apps: Any, schema_editor: Any) -> None:
    Mutation = apps.get_model("sync", "Mutation")
    Mutation.objects.filter(status="quarantined", dismissed_at__isnull=False, dismiss_code="").update(
        dismiss_code="reviewed"
    )


def unname_them(apps: Any, schema_editor: Any) -> None:
    Mutation = apps.get_model("sync", "Mutation")
    Mutation.objects.filter(status="quarantined", dismiss_code="reviewed").update(dismiss_code="")


class Migration(migrations.Migration):
    dependencies = [("sync", "0018_mutation_dismiss_code")]

    operations = [migrations.RunPython(name_them_reviewed, unname_them, elidable=True)]
