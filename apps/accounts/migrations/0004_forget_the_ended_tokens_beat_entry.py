from django.db import migrations
from django.utils import timezone

# The daily token prune ran for a while as "prune-ended-tokens" (task prune_ended_tokens)
# before it went back to its first name. The database scheduler adds and updates its entries
# from the settings but never deletes one, so a database that ran beat meanwhile would keep
# calling a task that no longer exists.
RETIRED_ENTRY = "prune-ended-tokens"


def forget_retired_entry(apps, schema_editor):
    PeriodicTask = apps.get_model("django_celery_beat", "PeriodicTask")
    deleted, _by_model = PeriodicTask.objects.filter(name=RETIRED_ENTRY).delete()
    if deleted:
        # A running beat reloads its schedule when this mark moves; the model's own signal,
        # which moves it, does not fire for a migration's historical model.
        PeriodicTasks = apps.get_model("django_celery_beat", "PeriodicTasks")
        PeriodicTasks.objects.update_or_create(ident=1, defaults={"last_update": timezone.now()})


class Migration(migrations.Migration):

    dependencies = [
        ("accounts", "0003_token_replaced_at"),
        ("django_celery_beat", "0019_alter_periodictasks_options"),
    ]

    operations = [
        migrations.RunPython(forget_retired_entry, migrations.RunPython.noop, elidable=True),
    ]
