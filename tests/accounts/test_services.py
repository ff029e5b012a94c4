from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from celery.exceptions import SoftTimeLimitExceeded
from django.utils import timezone

from apps.accounts import services
from apps.accounts.models import Device, DeviceToken
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


def test_a_device_seen_again_while_the_unseen_are_being_revoked_is_kept(monkeypatch: pytest.MonkeyPatch) -> None:
    """The task reads the unseen devices, then revokes them one by one: one that comes back
    meanwhile is in a crew's hands, and revoking it would wipe what its crew holds."""
    long_ago = timezone.now() - timedelta(days=31)
    first, second = sorted(DeviceFactory.create_batch(2, last_seen_at=long_ago), key=lambda device: device.pk)
    revoke = services.device_revoke

    def second_comes_back(**kwargs: Any) -> Device:
        Device.objects.filter(pk=second.pk).update(last_seen_at=timezone.now())
        return revoke(**kwargs)

    monkeypatch.setattr(services, "device_revoke", second_comes_back)

    revoked = services.devices_revoke_unseen(unseen_for_days=30)

    assert revoked == 1
    assert Device.objects.get(pk=first.pk).revoked_at is not None
    assert Device.objects.get(pk=second.pk).revoked_at is None


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


def test_tokens_rotated_away_long_ago_are_deleted_and_a_revoked_devices_kept() -> None:
    long_ago = timezone.now() - timedelta(days=services.ROTATED_TOKEN_KEEP_DAYS + 1)
    device = DeviceFactory.create(last_seen_at=timezone.now())
    revoked_device = DeviceFactory.create(last_seen_at=timezone.now())
    # A lost tablet: its one token's grace ran out and it was not seen since; not yet revoked.
    lost_tablet = DeviceFactory.create(last_seen_at=long_ago - timedelta(days=1))
    lost_tablets_only, _raw = services.device_token_issue(device=lost_tablet)
    DeviceToken.objects.filter(pk=lost_tablets_only.pk).update(replaced_at=long_ago - timedelta(days=1))
    successor_used, _raw = services.device_token_issue(device=device)
    never_answered, _raw = services.device_token_issue(device=device)
    recently_rotated, _raw = services.device_token_issue(device=device)
    current, _raw = services.device_token_issue(device=device)
    of_revoked_device, _raw = services.device_token_issue(device=revoked_device)
    DeviceToken.objects.filter(pk=successor_used.pk).update(revoked_at=long_ago, replaced_at=long_ago)
    DeviceToken.objects.filter(pk=never_answered.pk).update(replaced_at=long_ago)  # its grace ran out
    DeviceToken.objects.filter(pk=recently_rotated.pk).update(revoked_at=timezone.now() - timedelta(days=2))
    services.device_revoke(device=revoked_device, revoked_by=None, reason="lost")
    DeviceToken.objects.filter(pk=of_revoked_device.pk).update(revoked_at=long_ago)

    pruned = services.device_tokens_prune()

    assert pruned == 2
    assert set(DeviceToken.objects.values_list("pk", flat=True)) >= {
        recently_rotated.pk,
        current.pk,
        of_revoked_device.pk,
        lost_tablets_only.pk,
    }
    assert not DeviceToken.objects.filter(pk__in=[successor_used.pk, never_answered.pk]).exists()


@pytest.mark.django_db(transaction=True)  # each revocation commits, and its sockets are told after
def test_revoking_unseen_devices_stops_at_the_soft_time_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    """The soft time limit may strike while a revoked device's sockets are told, after its
    commit (a slow Redis, say): the task stops there, the revocation stands, and the devices
    after it are the next run's."""
    long_ago = timezone.now() - timedelta(days=31)
    first, second = sorted(DeviceFactory.create_batch(2, last_seen_at=long_ago), key=lambda device: device.pk)
    told: list[Any] = []

    def stopped(function: Any) -> Any:
        def call(*args: Any, **kwargs: Any) -> None:
            told.append(args)
            raise SoftTimeLimitExceeded()

        return call

    monkeypatch.setattr(services, "async_to_sync", stopped)

    with pytest.raises(SoftTimeLimitExceeded):
        services.devices_revoke_unseen(unseen_for_days=30)

    assert len(told) == 1
    assert Device.objects.get(pk=first.pk).revoked_at is not None
    assert Device.objects.get(pk=second.pk).revoked_at is None
