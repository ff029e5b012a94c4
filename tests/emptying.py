"""How the suite empties the database after a test that commits (``django_db(transaction=True)``).

Django empties it with the ``flush`` command, one ``TRUNCATE`` of every table. PostgreSQL
truncates a table by giving it and each of its indexes new files, so emptying about a
hundred tables took 0.3 to 0.5 s even when the test had written a dozen rows, and the
``post_migrate`` signal that follows then wrote every content type and permission again:
together about a third of the suite's time. A ``DELETE`` of each table costs what the test wrote.

What the tests see is the same: every table the application writes is empty when the next
test starts. Content types and permissions are kept, as they are after a test that rolls
back: ``post_migrate`` would only write the same rows again (under new ids). The foreign
keys are checked at commit (Django makes them deferrable), so the order of the deletes does
not matter, and the audit trail's append-only trigger is passed the way the retention purge
passes it (``ALLOW_PURGE_SQL``, for this transaction only).

A flush that resets sequences or cascades (``manage.py flush``, or a test limited to some
apps) keeps Django's ``TRUNCATE``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from django.db.backends.postgresql.operations import DatabaseOperations

from apps.audit.services import ALLOW_PURGE_SQL

KEPT_TABLES = frozenset({"django_content_type", "auth_permission"})

_truncating_sql_flush = DatabaseOperations.sql_flush


def _deleting_sql_flush(
    self: DatabaseOperations,
    style: Any,
    tables: Sequence[str],
    *,
    reset_sequences: bool = False,
    allow_cascade: bool = False,
) -> list[str]:
    if reset_sequences or allow_cascade:
        return _truncating_sql_flush(self, style, tables, reset_sequences=reset_sequences, allow_cascade=allow_cascade)
    emptied = sorted(table for table in tables if table not in KEPT_TABLES)
    if not emptied:
        return []
    return [
        f"{ALLOW_PURGE_SQL};",
        # The names are the tables Django found in the database, quoted.
        *(f"DELETE FROM {self.quote_name(table)};" for table in emptied),  # noqa: S608
    ]


def empty_by_deleting() -> None:
    """Make the flush after each committing test delete rows instead of truncating tables."""
    DatabaseOperations.sql_flush = _deleting_sql_flush  # type: ignore[method-assign,assignment]
