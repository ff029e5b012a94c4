from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from django.utils import timezone

from apps.accounts import services
from apps.accounts.models import Device
from tests.accounts.factories import DeviceFactory

pytestmark = pytest.mark.django_db


def test_revoking_twice_keeps_the_first_revocation() -> None:
    device = DeviceFactory.create()
    first = services.device_revoke(device=device, revoked_by=None, reason="lost")

    second = services.device_revoke(device=device, revoked_by=None, reason="again")

    assert second.revoked_at == first.revoked_at
    assert second.revoke_reason == "lost"


def test_unseen_devices_are_revoked_and_recent_ones_kept() -> None:
    stale = DeviceFactory.create(last_seen_at=timezone.now() - timedelta(days=31))
    recent = DeviceFactory.create(last_seen_at=timezone.now() - timedelta(days=2))

    revoked = services.devices_revoke_unseen(unseen_for_days=30)

    assert revoked == 1
    assert Device.objects.get(pk=stale.pk).revoked_at is not None
    assert Device.objects.get(pk=recent.pk).revoked_at is None


def test_a_device_never_seen_counts_from_its_registration() -> None:
    forgotten = DeviceFactory.create(last_seen_at=None)
    Device.objects.filter(pk=forgotten.pk).update(created_at=timezone.now() - timedelta(days=31))
    just_registered = DeviceFactory.create(last_seen_at=None)

    revoked = services.devices_revoke_unseen(unseen_for_days=30)

    assert revoked == 1
    assert Device.objects.get(pk=forgotten.pk).revoked_at is not None
    assert Device.objects.get(pk=just_registered.pk).revoked_at is None


def test_a_device_seen_again_after_a_minute_or_never_before_is_marked_seen() -> None:
    stale = DeviceFactory.create(last_seen_at=timezone.now() - timedelta(minutes=5))
    never = DeviceFactory.create(last_seen_at=None)

    services.device_mark_seen(device=stale)
    services.device_mark_seen(device=never)

    for device in (stale, never):
        seen_at = Device.objects.get(pk=device.pk).last_seen_at
        assert seen_at is not None and seen_at > timezone.now() - timedelta(seconds=30)


def test_a_device_seen_within_the_minute_costs_no_query(django_assert_num_queries: Any) -> None:
    seen = timezone.now() - timedelta(seconds=10)
    device = DeviceFactory.create(last_seen_at=seen)

    with django_assert_num_queries(0):
        services.device_mark_seen(device=device)

    assert Device.objects.get(pk=device.pk).last_seen_at == seen
