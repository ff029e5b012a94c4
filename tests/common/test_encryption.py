from __future__ import annotations

import pytest
from cryptography.fernet import Fernet
from django.core.exceptions import ImproperlyConfigured

from apps.common.encryption import (
    UnreadableHealthInformation,
    is_sealed,
    reseal,
    seal,
    seal_json,
    unseal,
    unseal_json,
)

OLD_KEY = Fernet.generate_key().decode()
NEW_KEY = Fernet.generate_key().decode()


def test_sealed_text_hides_the_plaintext_and_opens_again(settings):
    settings.FIELD_ENCRYPTION_KEYS = [NEW_KEY]
    sealed = seal("Reports hearing voices; safety plan agreed.")
    assert "voices" not in sealed
    assert is_sealed(sealed)
    assert unseal(sealed) == "Reports hearing voices; safety plan agreed."


def test_sealing_the_same_text_twice_gives_different_ciphertexts(settings):
    settings.FIELD_ENCRYPTION_KEYS = [NEW_KEY]
    assert seal("same") != seal("same")


def test_json_values_round_trip(settings):
    settings.FIELD_ENCRYPTION_KEYS = [NEW_KEY]
    value = {"body": "Naïve note ✓", "n": 3, "tags": ["a", None]}
    assert unseal_json(seal_json(value)) == value


def test_rotation_keeps_old_values_readable_and_reseals_them_with_the_new_key(settings):
    settings.FIELD_ENCRYPTION_KEYS = [OLD_KEY]
    sealed_with_old = seal("written last year")
    settings.FIELD_ENCRYPTION_KEYS = [NEW_KEY, OLD_KEY]
    assert unseal(sealed_with_old) == "written last year"
    resealed = reseal(sealed_with_old)
    settings.FIELD_ENCRYPTION_KEYS = [NEW_KEY]
    assert unseal(resealed) == "written last year"
    with pytest.raises(UnreadableHealthInformation):
        unseal(sealed_with_old)


def test_a_value_no_key_opens_fails_loudly_instead_of_showing_ciphertext(settings):
    settings.FIELD_ENCRYPTION_KEYS = [OLD_KEY]
    sealed = seal("private")
    settings.FIELD_ENCRYPTION_KEYS = [NEW_KEY]
    with pytest.raises(UnreadableHealthInformation):
        unseal(sealed)


@pytest.mark.parametrize("keys", [[], [""], ["not-a-fernet-key"]])
def test_missing_or_malformed_keys_are_a_configuration_error(settings, keys):
    settings.FIELD_ENCRYPTION_KEYS = keys
    with pytest.raises(ImproperlyConfigured):
        seal("anything")
