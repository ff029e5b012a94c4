"""The version a device holds whole (sync.merge.held_version): pure functions, no database."""

from __future__ import annotations

from typing import Any

from apps.sync import merge

TABLET, COLLEAGUE = "tablet", "colleague"


def _version(
    version: int, writer: str | None, data: dict[str, Any], changed: tuple[str, ...], *, held: bool = False
) -> merge.VersionView:
    return merge.VersionView(
        version=version,
        data=data,
        device_id=writer,
        changed_fields=changed,
        mutation_id=version * 10 if writer else None,
        made_as=version if writer == TABLET else None,
        held_by_writer=held,
    )


def _history(*, held: bool, writer_of_v3: str = TABLET) -> list[merge.VersionView]:
    return [
        _version(1, COLLEAGUE, {"location": "Lenox Ave", "assessment": ""}, ("location", "assessment")),
        _version(2, COLLEAGUE, {"location": "125th St", "assessment": ""}, ("location",)),
        _version(3, writer_of_v3, {"location": "125th St", "assessment": "Calm."}, ("assessment",), held=held),
    ]


def test_an_edit_after_the_devices_own_write_it_held_whole_is_made_on_that_write() -> None:
    versions = _history(held=True)

    base = merge.effective_base(base_version=1, versions=versions, device_id=TABLET)

    assert base == {"location": "125th St", "assessment": "Calm."}
    assert not merge.changed_by_others_since(base_version=1, versions=versions, device_id=TABLET)


def test_an_own_write_not_held_whole_advances_only_the_fields_it_wrote() -> None:
    versions = _history(held=False)

    base = merge.effective_base(base_version=1, versions=versions, device_id=TABLET)

    assert base == {"location": "Lenox Ave", "assessment": "Calm."}
    assert merge.changed_by_others_since(base_version=1, versions=versions, device_id=TABLET)


def test_another_devices_write_held_whole_is_no_base_of_this_device() -> None:
    versions = _history(held=True, writer_of_v3=COLLEAGUE)

    assert merge.held_version(base_version=1, versions=versions, device_id=TABLET) == 1


def test_an_own_write_made_after_the_edit_is_no_base_of_it() -> None:
    """An edit applied again after review: the device's later write, held whole, came after it."""
    versions = _history(held=True)

    assert merge.held_version(base_version=1, versions=versions, device_id=TABLET, made_before=25, made_as=2) == 1
    assert merge.held_version(base_version=1, versions=versions, device_id=TABLET, made_before=45, made_as=4) == 3


def test_a_colleagues_write_after_the_held_version_is_still_the_colleagues() -> None:
    versions = [
        *_history(held=True),
        _version(4, COLLEAGUE, {"location": "Park Ave", "assessment": "Calm."}, ("location",)),
    ]

    assert merge.effective_base(base_version=1, versions=versions, device_id=TABLET) == {
        "location": "125th St",
        "assessment": "Calm.",
    }
    assert merge.changed_by_others_since(base_version=1, versions=versions, device_id=TABLET)
