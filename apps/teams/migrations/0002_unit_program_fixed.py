from __future__ import annotations

from django.db import migrations

# A unit's records are its program's, and its scope tells who sees them: a unit moved to
# another program would serve the first program's records to that program's crews. The
# admin shows the program read-only; the database refuses the move from any other path too
# (a shell, a bulk update, a script). A unit no longer wanted is retired, not moved.
# AFTER, not BEFORE: for a BEFORE row trigger PostgreSQL fetches and locks the row first on
# every update of a unit, whatever its columns, which changed the order concurrent writers
# waiting on a unit's row were served in.
FORBID_MOVE = """
CREATE FUNCTION teams_unit_program_fixed() RETURNS trigger AS $$
BEGIN
    RAISE EXCEPTION 'a unit stays in the program it was made in (unit %)', OLD.id
        USING ERRCODE = 'check_violation';
END;
$$ LANGUAGE plpgsql;

CREATE TRIGGER teams_unit_program_fixed
    AFTER UPDATE OF program_id ON teams_unit
    FOR EACH ROW WHEN (OLD.program_id IS DISTINCT FROM NEW.program_id)
    EXECUTE FUNCTION teams_unit_program_fixed();
"""

ALLOW_MOVE = """
DROP TRIGGER IF EXISTS teams_unit_program_fixed ON teams_unit;
DROP FUNCTION IF EXISTS teams_unit_program_fixed();
"""


class Migration(migrations.Migration):
    dependencies = [("teams", "0001_initial")]

    operations = [migrations.RunSQL(FORBID_MOVE, ALLOW_MOVE)]
