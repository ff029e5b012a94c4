"""Health information encrypted at rest, field by field.

Values are sealed with AES-256-GCM-SIV (RFC 8452, an authenticated cipher) from the
``cryptography`` library. ``FIELD_ENCRYPTION_KEYS`` lists keys newest first: new values are
sealed with the first, and every listed key still opens what it sealed, so a key is rotated
by putting a new one in front, running ``manage.py reseal_health_information`` and then
dropping the old one.

A sealed value is ``sealed:v2:`` and, in url-safe base64, the key's id (4 bytes), a random
nonce (12 bytes) and the ciphertext with its tag. Each configured key (32 url-safe base64
bytes, the Fernet key format) is stretched with HKDF-SHA256 into the cipher's key and its
id, so a value names the key that opens it. GCM-SIV rather than GCM: a repeated random
nonce, however unlikely, reveals only that two values are equal, never the key stream.

Values sealed before this format are Fernet tokens (AES-128-CBC with HMAC-SHA256, from the
same keys): they still open, and the reseal command brings them to the current format.
Fernet cost about 8 µs a value to seal and 9 µs to open; a sync push seals and opens
several per mutation, and this cipher does each in about 2.

Why not a ready-made encrypted-field package: the maintained ones derive keys from
SECRET_KEY (rotating the session secret would then mean re-encrypting every record), store
an empty string as NULL, and hand back the ciphertext when no key fits instead of failing.
A wrong key must fail loudly: showing ciphertext as a clinical note is a silent data loss.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import json
import os
from dataclasses import dataclass
from functools import cache
from typing import Any

import orjson
from cryptography.exceptions import InvalidTag, UnsupportedAlgorithm
from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCMSIV
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.core.signals import setting_changed
from django.db import models
from django.dispatch import receiver

# Every value sealed now starts with this; those sealed before, with Fernet's version byte
# in base64. Neither is url-safe base64 of anything else, and both pass through JSON as is.
SEALED_PREFIX = "sealed:v2:"
FERNET_PREFIX = "gAAAAA"
_KEY_ID_BYTES = 4
_NONCE_BYTES = 12
_KDF_INFO = b"tandem health information sealing: AES-256-GCM-SIV key and key id"


class UnreadableHealthInformation(Exception):
    """A stored value no configured key opens: the key list is wrong, never the data."""


@dataclass(frozen=True)
class _Key:
    key_id: bytes
    cipher: AESGCMSIV
    fernet: Fernet


def _key(configured: str) -> _Key:
    fernet = Fernet(configured)  # checks the format: 32 url-safe base64 bytes
    material = HKDF(algorithm=hashes.SHA256(), length=32 + _KEY_ID_BYTES, salt=None, info=_KDF_INFO).derive(
        base64.urlsafe_b64decode(configured)
    )
    return _Key(key_id=material[32:], cipher=AESGCMSIV(material[:32]), fernet=fernet)


@cache
def _keys() -> list[_Key]:
    configured = [key.strip() for key in settings.FIELD_ENCRYPTION_KEYS if key.strip()]
    if not configured:
        raise ImproperlyConfigured("FIELD_ENCRYPTION_KEYS must list at least one key.")
    try:
        return [_key(key) for key in configured]
    except (ValueError, binascii.Error) as error:
        raise ImproperlyConfigured(
            "FIELD_ENCRYPTION_KEYS holds a value that is not a key (32 url-safe base64-encoded "
            "bytes; make one with cryptography's Fernet.generate_key())."
        ) from error
    except UnsupportedAlgorithm as error:
        raise ImproperlyConfigured(
            "This build of the cryptography library lacks AES-GCM-SIV (it needs OpenSSL 3.2 or later)."
        ) from error


@cache
def _keys_by_id() -> dict[bytes, list[_Key]]:
    found: dict[bytes, list[_Key]] = {}
    for key in _keys():
        found.setdefault(key.key_id, []).append(key)
    return found


@cache
def _old_keyring() -> MultiFernet:
    return MultiFernet([key.fernet for key in _keys()])


@receiver(setting_changed)
def _forget_keys(*, setting: str, **_: Any) -> None:
    if setting == "FIELD_ENCRYPTION_KEYS":
        _keys.cache_clear()
        _keys_by_id.cache_clear()
        _old_keyring.cache_clear()


def seal(plaintext: str) -> str:
    return _seal_bytes(plaintext.encode())


def _seal_bytes(plaintext: bytes) -> str:
    key = _keys()[0]
    nonce = os.urandom(_NONCE_BYTES)
    sealed = key.key_id + nonce + key.cipher.encrypt(nonce, plaintext, None)
    return SEALED_PREFIX + base64.urlsafe_b64encode(sealed).decode()


def _unreadable() -> UnreadableHealthInformation:
    return UnreadableHealthInformation("No key in FIELD_ENCRYPTION_KEYS opens this value.")


def _parts(sealed: str) -> tuple[bytes, bytes, bytes]:
    """A current-format value's key id, nonce and ciphertext."""
    try:
        raw = base64.urlsafe_b64decode(sealed[len(SEALED_PREFIX) :])
    except (ValueError, binascii.Error) as error:
        raise _unreadable() from error
    body_starts = _KEY_ID_BYTES + _NONCE_BYTES
    return raw[:_KEY_ID_BYTES], raw[_KEY_ID_BYTES:body_starts], raw[body_starts:]


def unseal(sealed: str) -> str:
    if not sealed.startswith(SEALED_PREFIX):
        try:
            return _old_keyring().decrypt(sealed.encode()).decode()
        except InvalidToken as error:
            raise _unreadable() from error
    key_id, nonce, body = _parts(sealed)
    for key in _keys_by_id().get(key_id, ()):
        try:
            return key.cipher.decrypt(nonce, body, None).decode()
        except InvalidTag:
            continue  # another key with the same id (one chance in four billion)
    raise _unreadable()


def reseal(sealed: str) -> str:
    """The same value sealed with the newest key, in the current format (for key rotation)."""
    return seal(unseal(sealed))


def is_sealed(value: str) -> bool:
    return value.startswith((SEALED_PREFIX, FERNET_PREFIX))


def seal_json(value: Any) -> str:
    if type(value) is str:
        # Most sealed values are clinical text: orjson writes it ten times faster. Other
        # values (non-finite floats, which orjson writes as null) and lone surrogates (which
        # it refuses) keep the standard library's text.
        with contextlib.suppress(orjson.JSONEncodeError):
            return _seal_bytes(orjson.dumps(value))
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
    """Whether the value is in the current format under the first key in
    FIELD_ENCRYPTION_KEYS (nothing to reseal)."""
    if not sealed.startswith(SEALED_PREFIX):
        return False
    newest = _keys()[0]
    try:
        key_id, nonce, body = _parts(sealed)
        if key_id != newest.key_id:
            return False
        newest.cipher.decrypt(nonce, body, None)
    except (UnreadableHealthInformation, InvalidTag):
        return False
    return True
