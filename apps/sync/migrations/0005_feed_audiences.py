"""One feed entry per change for everyone who sees it: audiences replace per-scope rows.

A record seen through several scopes (a unit's crew, its program's case managers and
supervisors) got a feed entry and a scope row per scope. Now its change is one entry
addressed to its audience, and its head names that audience, which the snapshot walks.
Existing heads get the audience of their scopes; existing feed entries, each addressed to
one scope, are audiences of one scope and stay as they are.
"""

import hashlib

import django.contrib.postgres.fields
import django.contrib.postgres.indexes
from django.db import migrations, models

# As apps.sync.scopes.audience_of computed it when this migration was written.
_PREFIX = "audience."
_SEPARATOR = "\x1f"


def _audience_key(scopes):
    scopes = sorted(set(scopes))
    if len(scopes) <= 1:
        return scopes[0] if scopes else ""
    return _PREFIX + hashlib.sha256(_SEPARATOR.join(scopes).encode()).hexdigest()[:32]


def address_heads_to_audiences(apps, schema_editor):
    Audience = apps.get_model("sync", "Audience")
    SyncedRecord = apps.get_model("sync", "SyncedRecord")
    for scopes in SyncedRecord.objects.values_list("scopes", flat=True).distinct():
        key = _audience_key(scopes)
        if len(set(scopes)) > 1:
            Audience.objects.get_or_create(key=key, defaults={"scopes": sorted(set(scopes))})
        SyncedRecord.objects.filter(scopes=scopes).update(audience=key)


class Migration(migrations.Migration):

    dependencies = [
        ('accounts', '0001_initial'),
        ('sync', '0004_unchecked_sync_references'),
    ]

    operations = [
        migrations.CreateModel(
            name='Audience',
            fields=[
                ('key', models.CharField(max_length=80, primary_key=True, serialize=False)),
                ('scopes', django.contrib.postgres.fields.ArrayField(base_field=models.CharField(max_length=80), size=None)),
            ],
        ),
        migrations.AddField(
            model_name='syncedrecord',
            name='audience',
            field=models.CharField(default='', max_length=80),
        ),
        migrations.RunPython(address_heads_to_audiences, migrations.RunPython.noop),
        migrations.AddIndex(
            model_name='syncedrecord',
            index=models.Index(fields=['audience', 'record_id'], name='synced_record_audience'),
        ),
        migrations.AddIndex(
            model_name='audience',
            index=django.contrib.postgres.indexes.GinIndex(fields=['scopes'], name='audience_scopes'),
        ),
        migrations.RemoveField(
            model_name='syncedrecordscope',
            name='record',
        ),
        migrations.DeleteModel(
            name='SyncedRecordScope',
        ),
    ]
