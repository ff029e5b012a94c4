"""Departures from programs left before departures were kept (``accounts.ProgramDeparture``),
and the quarantined mutations filed under a program their writer was never part of.

A refused mutation is filed under a program only if its writer works for it or has left
it. Someone who holds no role in a program now was in it if a change of theirs to one of
its records applied (or applied as far as it merged), if their devices were served one of
its scopes (a unit's or a program role's: served to members only), or if the audit trail
shows them at one of its records (superusers aside, who see every program); when they
left is not known. A crew place is no sign: anyone can be put on any unit, and since
2026-12-05 it grants nothing without a role in the unit's program (before, it granted the
unit's scope, so a crew place held then may still show as a unit scope served).

Then each quarantined mutation filed under a program its writer was never part of (the
rule before: a Boston record's id sent by someone never in Boston went to Boston) goes
where the push files such a mutation now: to the one program its writer works for (or,
working for none, the one they left), else to none.

Reversible as far as it can be: the departures found so (those without a time) are
forgotten; where the mutations were filed before is not kept.
"""

from __future__ import annotations

from django.db import migrations

FIND_DEPARTURES = """
WITH served (user_id, scope) AS (
    SELECT user_id, unnest(scopes) FROM sync_userscopestate
    UNION
    SELECT user_id, scope FROM sync_scopechange WHERE gained
),
was_there (user_id, program_id) AS (
    SELECT m.user_id, s.program_id
    FROM sync_mutation AS m JOIN sync_syncedrecord AS s ON s.record_id = m.record_id
    WHERE m.status IN ('applied', 'conflict')
    UNION
    SELECT served.user_id, u.program_id FROM served JOIN teams_unit AS u ON served.scope = 'unit.' || u.id::text
    UNION
    SELECT user_id, split_part(scope, '.', 2)::uuid FROM served WHERE split_part(scope, '.', 1) = 'program'
    UNION
    SELECT e.actor_id, e.program_id
    FROM audit_auditevent AS e JOIN accounts_user AS actor ON actor.id = e.actor_id
    WHERE e.program_id IS NOT NULL AND NOT actor.is_superuser
)
INSERT INTO accounts_programdeparture (user_id, program_id, left_at)
SELECT user_id, program_id, NULL::timestamptz FROM was_there
WHERE NOT EXISTS (
    SELECT 1 FROM accounts_membership AS a WHERE a.user_id = was_there.user_id AND a.program_id = was_there.program_id
)
  -- The audit trail and scope names keep a program's id after the program is deleted.
  AND EXISTS (SELECT 1 FROM accounts_program AS p WHERE p.id = was_there.program_id)
ON CONFLICT (user_id, program_id) DO NOTHING
"""

REFILE_OUTSIDERS = """
UPDATE sync_mutation AS m
SET program_id = coalesce(
    (SELECT min(a.program_id::text)::uuid FROM accounts_membership AS a
     WHERE a.user_id = m.user_id HAVING count(DISTINCT a.program_id) = 1),
    (SELECT min(d.program_id::text)::uuid FROM accounts_programdeparture AS d
     WHERE d.user_id = m.user_id
       AND NOT EXISTS (SELECT 1 FROM accounts_membership AS a WHERE a.user_id = m.user_id)
     HAVING count(*) = 1)
)
WHERE m.status = 'quarantined' AND m.program_id IS NOT NULL
  AND NOT EXISTS (SELECT 1 FROM accounts_membership AS a WHERE a.user_id = m.user_id AND a.program_id = m.program_id)
  AND NOT EXISTS (
    SELECT 1 FROM accounts_programdeparture AS d WHERE d.user_id = m.user_id AND d.program_id = m.program_id
  )
"""

FORGET_FOUND_DEPARTURES = "DELETE FROM accounts_programdeparture WHERE left_at IS NULL"


class Migration(migrations.Migration):
    dependencies = [
        ("sync", "0019_fill_dismiss_code_reviewed"),
        ("accounts", "0006_program_departure"),
        ("teams", "0002_unit_program_fixed"),
        ("audit", "0002_append_only_trigger"),
    ]

    operations = [
        migrations.RunSQL(FIND_DEPARTURES, FORGET_FOUND_DEPARTURES, elidable=True),
        migrations.RunSQL(REFILE_OUTSIDERS, migrations.RunSQL.noop, elidable=True),
    ]
