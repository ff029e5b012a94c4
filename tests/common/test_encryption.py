from __future__ import annotations

import pytest
from cryptography.fernet import Fernet
from django.core.exceptions import ImproperlyConfigured

from apps.common.encryption import (
    SEALED_PREFIX,
    UnreadableHealthInformation,
    is_sealed,
    is_sealed_with_newest_key,
    reseal,
    seal,
    seal_json,
    unseal,
    unseal_json,
)
from apps.sync.sealing import unseal_text

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


@pytest.mark.parametrize(
    "value",
    ["Naïve note ✓\n\t\x00\x7f \u2028", "", "lone \ud800 surrogate", float("inf"), 1e-05, 2**70, None],
    ids=["text", "empty", "surrogate", "infinite", "small float", "big int", "null"],
)
def test_every_json_value_round_trips_as_itself(settings, value):
    settings.FIELD_ENCRYPTION_KEYS = [NEW_KEY]
    opened = unseal_json(seal_json(value))
    assert opened == value and type(opened) is type(value)


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


def test_a_value_names_its_key_so_rotation_knows_what_is_left_to_reseal(settings):
    settings.FIELD_ENCRYPTION_KEYS = [OLD_KEY]
    sealed_with_old = seal("written last year")
    assert sealed_with_old.startswith(SEALED_PREFIX)
    assert is_sealed_with_newest_key(sealed_with_old)
    settings.FIELD_ENCRYPTION_KEYS = [NEW_KEY, OLD_KEY]
    assert not is_sealed_with_newest_key(sealed_with_old)
    assert is_sealed_with_newest_key(reseal(sealed_with_old))


def test_values_sealed_by_earlier_releases_still_open_and_reseal_to_the_current_format(settings):
    # Earlier releases sealed with Fernet, from the same configured keys.
    settings.FIELD_ENCRYPTION_KEYS = [NEW_KEY]
    from_an_earlier_release = Fernet(NEW_KEY).encrypt(b"written before the upgrade").decode()
    assert is_sealed(from_an_earlier_release)
    assert unseal(from_an_earlier_release) == "written before the upgrade"
    assert not is_sealed_with_newest_key(from_an_earlier_release)  # the reseal command converts it
    resealed = reseal(from_an_earlier_release)
    assert resealed.startswith(SEALED_PREFIX) and is_sealed_with_newest_key(resealed)
    assert unseal(resealed) == "written before the upgrade"
    # The snapshot opens both formats inside JSON text (sync seals a health field's JSON).
    earlier_json = Fernet(NEW_KEY).encrypt(b'"then"').decode()
    text = f'{{"body": "{earlier_json}", "assessment": "{seal_json("now")}", "location": "plain"}}'
    assert unseal_text(text) == '{"body": "then", "assessment": "now", "location": "plain"}'


@pytest.mark.parametrize("damage", ["flip", "truncate", "not_base64"])
def test_a_damaged_value_fails_loudly(settings, damage):
    settings.FIELD_ENCRYPTION_KEYS = [NEW_KEY]
    sealed = seal("private")
    body = sealed[len(SEALED_PREFIX) :]
    damaged = {
        "flip": SEALED_PREFIX + body[:20] + ("A" if body[20] != "A" else "B") + body[21:],
        "truncate": sealed[:-8],
        "not_base64": SEALED_PREFIX + "***",
    }[damage]
    with pytest.raises(UnreadableHealthInformation):
        unseal(damaged)
    assert not is_sealed_with_newest_key(damaged)


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
