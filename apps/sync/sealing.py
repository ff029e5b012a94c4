"""Health information inside sync's stored copies of records, sealed at rest (DESIGN.md P8).

Sync keeps copies of what it syncs in JSON columns: record heads, versions, feed entries,
the mutation ledger's payloads and results, conflicts' competing values. A record type
declares which of its wire fields are health information (``SyncedType.health_fields``);
wherever such a field appears in a stored document, its value is stored sealed
(``apps.common.encryption``) as a JSON string, and every other field stays plain, so the
documents keep their structure (ids, versions, flags) for the database to read.

Writers seal with ``seal_tree`` (a ``memo`` lets the copies of one record version share a
sealed value instead of sealing it once per copy); readers open with ``unseal_tree``, or,
for JSON text passed through unparsed (the snapshot), with ``unseal_text``. The empty
string and null stay as they are: they tell nothing. Values stored before sealing (plain)
are read as they are until ``reseal_stored_copies`` seals them.
"""

from __future__ import annotations

import functools
import json
import re
from typing import Any

from django.db import models

from apps.common.encryption import (
    FERNET_PREFIX,
    SEALED_PREFIX,
    is_sealed,
    is_sealed_with_newest_key,
    reseal,
    seal_json,
    unseal,
    unseal_json,
)
from apps.sync import registry

health_names = registry.health_names


def _memo_key(value: Any) -> Any:
    # A string (clinical text, mostly) keys itself; anything else by its JSON. Tagged, so the
    # text "1" and the number 1 never share a sealing.
    return ("text", value) if type(value) is str else json.dumps(value)


def _seal_value(value: Any, memo: dict[Any, str] | None) -> Any:
    # Every value is sealed, also text that begins as a sealed value does: what a device
    # sends is never taken for what the server sealed (a reader would fail to open it, or
    # open for the device a sealed value it had got hold of).
    if value is None or value == "":
        return value
    if memo is None:
        return seal_json(value)
    key = _memo_key(value)
    token = memo.get(key)
    if token is None:
        token = memo[key] = seal_json(value)
    return token


def seal_tree(value: Any, memo: dict[Any, str] | None = None) -> Any:
    """A copy of ``value`` with every health field's value sealed, at any depth.

    ``memo`` maps a value to its sealed form: pass one per record (never share one
    across records: equal notes of two people would show as equal ciphertext).
    """
    names = health_names()
    return _seal(value, names, memo)


_NOT_CONTAINERS = frozenset({str, int, float, bool, type(None)})


def _seal(value: Any, names: frozenset[str], memo: dict[Any, str] | None) -> Any:
    if isinstance(value, dict):
        return {
            key: _seal_value(item, memo)
            if key in names
            else item
            if type(item) in _NOT_CONTAINERS
            else _seal(item, names, memo)
            for key, item in value.items()
        }
    if isinstance(value, list):
        return [_seal(item, names, memo) for item in value]
    return value


def unseal_tree(value: Any, memo: dict[Any, str] | None = None) -> Any:
    """A copy of ``value`` with every sealed health field opened. With ``memo``, records
    each opened value's sealed form, so an unchanged value is not sealed again."""
    return _unseal(value, health_names(), memo)


def _unseal(value: Any, names: frozenset[str], memo: dict[Any, str] | None) -> Any:
    if isinstance(value, dict):
        opened: dict[str, Any] = {}
        for key, item in value.items():
            if key in names and isinstance(item, str) and is_sealed(item):
                opened[key] = plain = unseal_json(item)
                if memo is not None:
                    memo[_memo_key(plain)] = item
            else:
                opened[key] = _unseal(item, names, memo)
        return opened
    if isinstance(value, list):
        return [_unseal(item, names, memo) for item in value]
    return value


def unseal_text(text: str) -> str:
    """JSON text (as PostgreSQL prints jsonb) with its sealed values opened, unparsed."""
    if SEALED_PREFIX not in text and FERNET_PREFIX not in text:
        return text
    # A sealed value is the value's JSON text: it goes back in as it is, never parsed.
    return _sealed_members(health_names()).sub(lambda match: f"{match[1]}: {unseal(match[2])}", text)


@functools.cache
def _sealed_members(names: frozenset[str]) -> re.Pattern[str]:
    """A health field's sealed value as PostgreSQL prints a jsonb member: the field's name in
    quotes, `: `, and a sealed token (a prefix, then url-safe base64, so never a quote or
    backslash inside) in quotes. Inside a plain string the quotes would be escaped, so this
    never matches part of one; and another field's text that looks sealed stays as it is."""
    keys = "|".join(re.escape(json.dumps(name)) for name in sorted(names))
    return re.compile(rf'({keys}): "((?:{re.escape(SEALED_PREFIX)}|{re.escape(FERNET_PREFIX)})[A-Za-z0-9_\-=]+)"')


def reseal_value(value: Any) -> Any:
    """A value sealed with the newest key: as it is if it already is, else sealed again
    (or sealed for the first time, if it was stored plain)."""
    if isinstance(value, str) and is_sealed(value):
        return value if is_sealed_with_newest_key(value) else reseal(value)
    return seal_json(value)


def reseal_tree(value: Any) -> tuple[Any, bool]:
    """``value`` with every sealed health field sealed again with the newest key, and every
    plain one sealed; and whether anything changed."""
    names = health_names()
    changed = False

    def walk(item: Any) -> Any:
        nonlocal changed
        if isinstance(item, dict):
            out: dict[str, Any] = {}
            for key, child in item.items():
                if key in names and child is not None and child != "":
                    fresh = reseal_value(child)
                    changed = changed or fresh != child
                    out[key] = fresh
                else:
                    out[key] = walk(child)
            return out
        if isinstance(item, list):
            return [walk(child) for child in item]
        return item

    return walk(value), changed


class HealthJSONField(models.JSONField):
    """A JSON document whose health fields are stored sealed and read opened."""

    def get_db_prep_save(self, value: Any, connection: Any) -> Any:
        return super().get_db_prep_save(seal_tree(value) if value is not None else None, connection)

    def from_db_value(self, value: Any, expression: Any, connection: Any) -> Any:
        return unseal_tree(super().from_db_value(value, expression, connection))


class SealedJSONField(models.JSONField):
    """A JSON value stored sealed as a whole (a conflict's competing values): its field
    name, not its shape, says whether it is health information, so all of it is sealed."""

    def get_db_prep_save(self, value: Any, connection: Any) -> Any:
        if value is not None:
            value = seal_json(value)
        return super().get_db_prep_save(value, connection)

    def from_db_value(self, value: Any, expression: Any, connection: Any) -> Any:
        value = super().from_db_value(value, expression, connection)
        if isinstance(value, str) and is_sealed(value):
            return unseal_json(value)
        return value
