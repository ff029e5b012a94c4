"""Set-based inserts and updates of model rows, for batches (a sync push writes hundreds).

Django's ``bulk_create`` and ``bulk_update`` bind every value of every row in Python (and
``bulk_update`` builds a CASE per row and column); for a push of a few hundred records that
cost more than the database's work. Here a batch travels as one JSON array that PostgreSQL
turns into rows of the table's own type (``jsonb_populate_recordset``): one statement, one
parameter, and the values converted by the server.

Values go through each field's ``get_db_prep_save`` first, so what lands in a column is
what the ORM would have written (an encrypted field's ciphertext, a timestamp's ``auto_now``).
"""

from __future__ import annotations

import datetime as dt
import decimal
import uuid
from collections.abc import Iterable, Sequence
from typing import Any

import psycopg
from django.db import DEFAULT_DB_ALIAS, connection, connections, models
from django.db.models.expressions import DatabaseDefault, RawSQL
from django.utils import timezone

from apps.common import jsontext


def server_cursor() -> psycopg.Cursor[Any]:
    """A cursor on Django's connection (same transaction) that binds parameters on the server
    (``%b`` binds in binary): Django's client-side binding quotes every array element in
    Python, which for a batch's arrays cost more than the statement.

    Its statements are fixed texts with the batch in parameters, so the connection prepares
    those it runs often (``prepare_threshold`` in the settings): PostgreSQL then parses
    each once per connection and soon plans it once too, instead of at every batch. Errors come out as Django's
    (``django.db.IntegrityError`` and the rest), as from the ORM's cursors."""
    connection.ensure_connection()
    return _ServerCursor(connection.connection)


class _ServerCursor(psycopg.Cursor[Any]):
    def execute(
        self, query: Any, params: Any = None, *, prepare: bool | None = None, binary: bool | None = None
    ) -> Any:
        with connection.wrap_database_errors:
            return super().execute(query, params, prepare=prepare, binary=binary)


def _json_value(value: Any) -> Any:
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, (dt.datetime, dt.date, dt.time)):
        return value.isoformat()
    if isinstance(value, decimal.Decimal):
        return str(value)
    if isinstance(value, (list, tuple)):
        return [_json_value(item) for item in value]
    obj = getattr(value, "obj", None)  # psycopg's Jsonb wrapper of a JSONField value
    if obj is not None or type(value).__name__ == "Jsonb":
        return obj
    if isinstance(value, dict):
        return value
    if isinstance(value, (bytes, memoryview)):
        return "\\x" + bytes(value).hex()
    return str(value)


# Fields whose Python value is already what the column takes (exact classes: a subclass,
# such as an encrypted text field, may transform its value and goes through the ORM's prep).
_PLAIN_FIELDS: tuple[type[Any], ...] = (
    models.UUIDField,
    models.CharField,
    models.TextField,
    models.BooleanField,
    models.IntegerField,
    models.PositiveIntegerField,
    models.PositiveSmallIntegerField,
    models.SmallIntegerField,
    models.BigIntegerField,
    models.AutoField,
    models.BigAutoField,
    models.FloatField,
    models.ForeignKey,
    models.OneToOneField,
    models.DateTimeField,
    models.DateField,
)


def _is_plain(model_field: Any) -> bool:
    if type(model_field) is models.JSONField:
        return model_field.encoder is None
    return type(model_field) in _PLAIN_FIELDS


def _converter(model_field: Any, *, add: bool, now: dt.datetime, db: Any) -> Any:
    """How a record's value of this field becomes its JSON form (_SKIP: leave the column out)."""
    attname = model_field.attname
    stamped = getattr(model_field, "auto_now", False) or (add and getattr(model_field, "auto_now_add", False))
    if stamped and type(model_field) is models.DateTimeField:
        # auto_now / auto_now_add: one timestamp for the batch, as its one statement gets.
        text = now.isoformat()

        def stamp(record: Any) -> Any:
            setattr(record, attname, now)
            return text

        return stamp
    if (
        not _is_plain(model_field)
        or getattr(model_field, "auto_now", False)
        or (add and getattr(model_field, "auto_now_add", False))
    ):

        def prepared(record: Any) -> Any:
            value = model_field.pre_save(record, add)
            if isinstance(value, DatabaseDefault):
                return _SKIP
            return _json_value(model_field.get_db_prep_save(value, db))

        return prepared

    def plain(record: Any) -> Any:
        value = getattr(record, attname)
        if value is None or type(value) in _WRITTEN_AS_IS:
            return value
        if isinstance(value, DatabaseDefault):
            return _SKIP
        return _json_value(value)

    return plain


_SKIP = object()
# Values the batch's JSON (apps.common.jsontext) writes as PostgreSQL reads them: ids and
# times as their ISO text, in C, instead of converted here first.
_WRITTEN_AS_IS = frozenset({str, int, bool, float, uuid.UUID, dt.datetime, dt.date})


def _columns(fields: Sequence[Any], records: Sequence[Any], *, add: bool, db: Any) -> list[dict[str, Any]]:
    now = timezone.now()
    converters = [(model_field.column, _converter(model_field, add=add, now=now, db=db)) for model_field in fields]
    rows: list[dict[str, Any]] = []
    for record in records:
        row: dict[str, Any] = {}
        for column, convert in converters:
            value = convert(record)
            if value is not _SKIP:
                row[column] = value
        rows.append(row)
    return rows


def insert(records: Sequence[models.Model]) -> None:
    """INSERT new rows of one model, all in one statement."""
    if not records:
        return
    model = type(records[0])
    meta = model._meta
    fields = [
        model_field
        for model_field in meta.concrete_fields
        if not (model_field.primary_key and getattr(records[0], model_field.attname) is None)
        and not model_field.generated
    ]
    db = _current_connection()
    rows = _columns(fields, records, add=True, db=db)
    names = [model_field.column for model_field in fields if model_field.column in rows[0]]
    columns = ", ".join(db.ops.quote_name(name) for name in names)
    table = db.ops.quote_name(meta.db_table)
    with server_cursor() as cursor:
        cursor.execute(
            # Names only from the model's metadata, quoted; the rows are one bound parameter.
            f"INSERT INTO {table} ({columns}) SELECT {columns}"  # noqa: S608
            f" FROM jsonb_populate_recordset(NULL::{table}, %s::jsonb)",
            [jsontext.dumps(rows)],
        )
    for record in records:
        record._state.adding = False
        record._state.db = db.alias


def update(records: Sequence[models.Model], field_names: Sequence[str]) -> None:
    """UPDATE these columns of existing rows of one model, all in one statement."""
    if not records:
        return
    meta = type(records[0])._meta
    fields: list[Any] = [meta.get_field(name) for name in field_names]
    db = _current_connection()
    rows = _columns([meta.pk, *fields], records, add=False, db=db)
    table = db.ops.quote_name(meta.db_table)
    pk = db.ops.quote_name(meta.pk.column)
    assignments = ", ".join(
        f"{db.ops.quote_name(model_field.column)} = r.{db.ops.quote_name(model_field.column)}" for model_field in fields
    )
    with server_cursor() as cursor:
        cursor.execute(
            f"UPDATE {table} AS t SET {assignments}"  # noqa: S608 — names from the model's metadata
            f" FROM jsonb_populate_recordset(NULL::{table}, %s::jsonb) AS r WHERE t.{pk} = r.{pk}",
            [jsontext.dumps(rows)],
        )


def _current_connection() -> Any:
    """This thread's database connection. ``django.db.connection`` finds it again at every
    attribute read (a context-local lookup), which per row of a batch adds up."""
    return connections[DEFAULT_DB_ALIAS]


def any_of(values: Iterable[Any], db_type: str) -> RawSQL:
    """``field__in=any_of(ids, "uuid")``: the values as one array parameter. A plain
    ``__in`` list prepares every value in Python, which for a batch's hundreds of ids cost
    more than the query.

    Ids and integers travel as the array's text (``{a,b,c}``), which needs no quoting:
    Django's client-side binding would otherwise quote each element in Python, twice the
    time for a batch's 200 ids."""
    values = list(values)
    if db_type in _LITERAL_ARRAY_TYPES and all(type(value) in _LITERAL_ARRAY_TYPES[db_type] for value in values):
        parameter: Any = "{" + ",".join(map(str, values)) + "}"
    else:
        parameter = values
    return RawSQL(f"SELECT unnest(%s::{db_type}[])", [parameter])  # noqa: S611 — the type is the caller's literal


# Types whose elements' text is a valid array element as it is (no comma, brace, quote or
# space), by the Python classes allowed.
_LITERAL_ARRAY_TYPES: dict[str, tuple[type[Any], ...]] = {"uuid": (uuid.UUID,), "int": (int,), "bigint": (int,)}
