"""Bringing every sealed value up to the newest key (key rotation), and sealing old plaintext.

The encrypted columns are found by looking at every installed model for an
``EncryptedTextField``, so this module never imports a domain app. Copies of health
information that live outside those columns (a mechanism's JSON copies of records) are
resealed by hooks their owners register here from ``AppConfig.ready()``::

    register_reseal_hook(reseal_stored_copies)

Values are read and written with plain SQL: the ORM would open them on the way in, and
``save()`` would touch ``updated_at`` and look like an edit to the sync feed. Each value is
written back only if it is still what was read (a compare-and-set), so a concurrent edit,
which is sealed with the newest key anyway, is never overwritten with an older text.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from django.apps import apps as django_apps
from django.db import connection, models, transaction

from apps.common.encryption import EncryptedTextField, is_sealed, is_sealed_with_newest_key, reseal, seal, unseal

ResealHook = Callable[[], int]

_hooks: list[ResealHook] = []


def register_reseal_hook(hook: ResealHook) -> ResealHook:
    """Run ``hook`` during ``reseal_health_information``; it returns how many values it resealed."""
    if hook not in _hooks:
        _hooks.append(hook)
    return hook


def reseal_hooks() -> list[ResealHook]:
    return list(_hooks)


@dataclass
class ResealCount:
    resealed: int = 0  # sealed with an older key, now with the newest
    sealed: int = 0  # found in plaintext (written before encryption), now sealed
    current: int = 0  # already sealed with the newest key: left alone
    skipped: int = 0  # changed by someone else meanwhile (and so sealed with the newest key)

    def add(self, other: ResealCount) -> None:
        self.resealed += other.resealed
        self.sealed += other.sealed
        self.current += other.current
        self.skipped += other.skipped


def encrypted_fields(model: type[models.Model]) -> list[models.Field[Any, Any]]:
    """The model's own encrypted columns (a child table's inherited ones belong to the parent)."""
    return [field for field in model._meta.local_concrete_fields if isinstance(field, EncryptedTextField)]


def models_with_encrypted_fields() -> list[type[models.Model]]:
    found = [
        model
        for model in django_apps.get_models()
        if not model._meta.proxy and model._meta.managed and encrypted_fields(model)
    ]
    return sorted(found, key=lambda model: model._meta.label)


def _batches(model: type[models.Model], columns: list[str], batch_size: int) -> Iterator[list[tuple[Any, ...]]]:
    """Rows (pk, *columns) in primary-key order, one batch at a time (keyset pagination)."""
    quote = connection.ops.quote_name
    table, pk = quote(model._meta.db_table), quote(model._meta.pk.column)
    selected = ", ".join([pk, *(quote(column) for column in columns)])
    last: Any = None
    while True:
        with connection.cursor() as cursor:
            if last is None:
                cursor.execute(f"SELECT {selected} FROM {table} ORDER BY {pk} LIMIT %s", [batch_size])  # noqa: S608
            else:
                cursor.execute(
                    f"SELECT {selected} FROM {table} WHERE {pk} > %s ORDER BY {pk} LIMIT %s",  # noqa: S608
                    [last, batch_size],
                )
            rows = cursor.fetchall()
        if not rows:
            return
        yield rows
        last = rows[-1][0]


def _rewrite(
    model: type[models.Model],
    fields: list[models.Field[Any, Any]],
    transform: Callable[[str], tuple[str | None, str]],
    batch_size: int,
) -> ResealCount:
    """Apply ``transform`` (value → (new value or None to keep, what happened)) to every value."""
    count = ResealCount()
    columns = [field.column for field in fields]
    quote = connection.ops.quote_name
    table, pk = quote(model._meta.db_table), quote(model._meta.pk.column)
    for rows in _batches(model, columns, batch_size):
        changes: list[tuple[str, str, Any, str, str]] = []
        for row in rows:
            for column, value in zip(columns, row[1:], strict=True):
                if not value:
                    continue
                new_value, outcome = transform(value)
                if new_value is None:
                    count.current += 1
                else:
                    changes.append((column, new_value, row[0], value, outcome))
        with transaction.atomic(), connection.cursor() as cursor:
            for column, new_value, row_pk, old_value, outcome in changes:
                cursor.execute(
                    f"UPDATE {table} SET {quote(column)} = %s WHERE {pk} = %s AND {quote(column)} = %s",  # noqa: S608
                    [new_value, row_pk, old_value],
                )
                if cursor.rowcount == 0:
                    outcome = "skipped"
                setattr(count, outcome, getattr(count, outcome) + 1)
    return count


def _to_newest_key(value: str) -> tuple[str | None, str]:
    if not is_sealed(value):
        return seal(value), "sealed"
    if is_sealed_with_newest_key(value):
        return None, "current"
    return reseal(value), "resealed"


def _to_plaintext(value: str) -> tuple[str | None, str]:
    if not is_sealed(value):
        return None, "current"
    return unseal(value), "resealed"


def reseal_model(model: type[models.Model], *, batch_size: int = 500) -> ResealCount:
    """Seal every value of the model's encrypted columns with the newest key. Idempotent."""
    return _rewrite(model, encrypted_fields(model), _to_newest_key, batch_size)


def seal_plaintext(model: type[models.Model], field_names: list[str], *, batch_size: int = 500) -> ResealCount:
    """For data migrations: seal what an earlier schema stored in plaintext (and bring older
    sealed values to the newest key). Works on historical models; idempotent."""
    fields = [model._meta.get_field(name) for name in field_names]
    return _rewrite(model, fields, _to_newest_key, batch_size)  # type: ignore[arg-type]


def open_sealed(model: type[models.Model], field_names: list[str], *, batch_size: int = 500) -> ResealCount:
    """For reversing those migrations: store the values in plaintext again."""
    fields = [model._meta.get_field(name) for name in field_names]
    return _rewrite(model, fields, _to_plaintext, batch_size)  # type: ignore[arg-type]
