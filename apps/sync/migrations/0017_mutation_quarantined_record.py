from django.contrib.postgres.operations import AddIndexConcurrently
from django.db import migrations, models


class Migration(migrations.Migration):
    # Built without blocking the pushes that write the ledger, one of the largest tables.
    atomic = False

    dependencies = [
        ("sync", "0016_version_held_by_writer"),
    ]

    operations = [
        AddIndexConcurrently(
            model_name="mutation",
            index=models.Index(
                condition=models.Q(("status", "quarantined")),
                fields=["record_id", "device"],
                name="mutation_quarantined_record",
            ),
        ),
    ]
