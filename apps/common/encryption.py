"""Health information encrypted at rest, field by field.

Values are sealed with Fernet (AES-128-CBC with HMAC-SHA256) from the ``cryptography``
library. ``FIELD_ENCRYPTION_KEYS`` lists keys newest first: new values are sealed with the
first, and every listed key still opens what it sealed, so a key is rotated by putting a new
one in front, running ``manage.py reseal_health_information`` and then dropping the old one.

Why not a ready-made encrypted-field package: the maintained ones derive keys from
SECRET_KEY (rotating the session secret would then mean re-encrypting every record), store
an empty string as NULL, and hand back the ciphertext when no key fits instead of failing.
A wrong key must fail loudly: showing ciphertext as a clinical note is a silent data loss.
"""

from __future__ import annotations

import json
from functools import cache
from typing import Any

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.core.signals import setting_changed
from django.db import models
from django.dispatch import receiver

# Every sealed value starts with the Fernet version byte, base64-encoded.
_SEALED_PREFIX = "gAAAAA"


class UnreadableHealthInformation(Exception):
    """A stored value no configured key opens: the key list is wrong, never the data."""


@cache
def _fernets() -> list[Fernet]:
    keys = [key.strip() for key in settings.FIELD_ENCRYPTION_KEYS if key.strip()]
    if not keys:
        raise ImproperlyConfigured("FIELD_ENCRYPTION_KEYS must list at least one Fernet key.")
    try:
        return [Fernet(key) for key in keys]
    except ValueError as error:
        raise ImproperlyConfigured(
            "FIELD_ENCRYPTION_KEYS holds a value that is not a Fernet key "
            "(32 url-safe base64-encoded bytes; make one with cryptography's Fernet.generate_key())."
        ) from error


@cache
def _keyring() -> MultiFernet:
    return MultiFernet(_fernets())


@receiver(setting_changed)
def _forget_keyring(*, setting: str, **_: Any) -> None:
    if setting == "FIELD_ENCRYPTION_KEYS":
        _fernets.cache_clear()
        _keyring.cache_clear()


def seal(plaintext: str) -> str:
    return _keyring().encrypt(plaintext.encode()).decode()


def unseal(sealed: str) -> str:
    try:
        return _keyring().decrypt(sealed.encode()).decode()
    except InvalidToken as error:
        raise UnreadableHealthInformation("No key in FIELD_ENCRYPTION_KEYS opens this value.") from error


def reseal(sealed: str) -> str:
    """The same value sealed with the newest key (for key rotation)."""
    try:
        return _keyring().rotate(sealed.encode()).decode()
    except InvalidToken as error:
        raise UnreadableHealthInformation("No key in FIELD_ENCRYPTION_KEYS opens this value.") from error


def is_sealed(value: str) -> bool:
    return value.startswith(_SEALED_PREFIX)


def seal_json(value: Any) -> str:
    return seal(json.dumps(value, separators=(",", ":")))


def unseal_json(sealed: str) -> Any:
    return json.loads(unseal(sealed))


class EncryptedTextField(models.TextField):
    """A text field stored sealed; the application only ever sees the plaintext.

    The empty string stays the empty string (it tells nothing), so ``blank=True`` fields keep
    their NOT NULL column. Sealed values cannot be searched or ordered by the database.
    """

    def get_prep_value(self, value: Any) -> Any:
        value = super().get_prep_value(value)
        if value is None or value == "":
            return value
        return seal(value)

    def from_db_value(self, value: str | None, expression: Any, connection: Any) -> str | None:
        if value is None or value == "":
            return value
        return unseal(value)


def sealed_field_names(model: type[models.Model]) -> list[str]:
    """The model's encrypted fields: ``.defer()`` them where only the record's references are
    read, and no value is opened for nothing."""
    return [field.name for field in model._meta.concrete_fields if isinstance(field, EncryptedTextField)]


def is_sealed_with_newest_key(sealed: str) -> bool:
    """Whether the first key in FIELD_ENCRYPTION_KEYS opens the value (nothing to reseal)."""
    try:
        _fernets()[0].decrypt(sealed.encode())
    except InvalidToken:
        return False
    return True
