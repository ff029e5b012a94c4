from django.contrib.postgres.operations import AddIndexConcurrently
from django.db import migrations, models


class Migration(migrations.Migration):
    # Built without blocking the feed's writers: the change table is the largest there is.
    atomic = False

    dependencies = [
        ("sync", "0009_scope_change"),
    ]

    operations = [
        AddIndexConcurrently(
            model_name="changeentry",
            index=models.Index(condition=models.Q(("version", None)), fields=["record_id"], name="change_entry_feed_only"),
        ),
    ]
