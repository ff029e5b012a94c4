from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from apps.accounts.models import Device
from apps.accounts.tasks import revoke_unseen_devices
from tests.accounts.factories import DeviceFactory
from tests.live import LiveProcess

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.live]


def test_real_worker_revokes_a_device_nobody_has_used(worker: LiveProcess) -> None:
    stale = DeviceFactory.create(last_seen_at=timezone.now() - timedelta(days=45))

    revoked = revoke_unseen_devices.delay().get(timeout=30)

    assert revoked == 1
    assert Device.objects.get(pk=stale.pk).revoked_at is not None
    assert "revoke_unseen_devices" in worker.log()
