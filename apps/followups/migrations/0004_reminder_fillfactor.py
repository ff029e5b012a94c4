"""Leave room in each page of followups_reminder, so the sweep's claim is a HOT update.

The claim writes ``claimed_at``, a column no index covers; with free space on the row's own
page PostgreSQL writes the new row version there and touches none of the table's indexes.
Pages written before this keep no room until the table is rewritten (VACUUM FULL, pg_repack).
"""

from __future__ import annotations

from django.db import migrations


class Migration(migrations.Migration):
    dependencies = [("followups", "0003_seal_existing_health_information")]

    operations = [
        migrations.RunSQL(
            "ALTER TABLE followups_reminder SET (fillfactor = 70)",
            reverse_sql="ALTER TABLE followups_reminder RESET (fillfactor)",
        )
    ]
