from django.db import migrations

# The daily token prune ran for a while as "prune-ended-tokens" (task prune_ended_tokens)
# before it went back to its first name. The database scheduler adds and updates its entries
# from the settings but never deletes one, so a database that ran beat meanwhile would keep
# calling a task that no longer exists.
RETIRED_ENTRY = "prune-ended-tokens"


def forget_retired_entry(apps, schema_editor):
    PeriodicTask = apps.get_model("django_celery_beat", "PeriodicTask")
    PeriodicTask.objects.filter(name=RETIRED_ENTRY).delete()


class Migration(migrations.Migration):

    dependencies = [
        ("accounts", "0003_token_replaced_at"),
        ("django_celery_beat", "0019_alter_periodictasks_options"),
    ]

    operations = [
        migrations.RunPython(forget_retired_entry, migrations.RunPython.noop, elidable=True),
    ]
