from __future__ import annotations

from datetime import timedelta

import pytest
from django.contrib.sessions.backends.db import SessionStore
from django.contrib.sessions.models import Session
from django.utils import timezone

from apps.accounts import services
from apps.accounts.models import Device, DeviceToken
from apps.accounts.tasks import clear_ended_sessions, prune_rotated_tokens, revoke_unseen_devices
from tests.accounts.factories import DeviceFactory
from tests.live import LiveProcess

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.live]


def test_real_worker_revokes_a_device_nobody_has_used(worker: LiveProcess) -> None:
    stale = DeviceFactory.create(last_seen_at=timezone.now() - timedelta(days=45))

    revoked = revoke_unseen_devices.apply_async(ignore_result=False).get(timeout=30)

    assert revoked == 1
    assert Device.objects.get(pk=stale.pk).revoked_at is not None
    assert "revoke_unseen_devices" in worker.log()


def test_real_worker_prunes_tokens_rotated_away_long_ago(worker: LiveProcess) -> None:
    device = DeviceFactory.create(last_seen_at=timezone.now())
    rotated_away, _raw = services.device_token_issue(device=device)
    long_ago = timezone.now() - timedelta(days=services.ROTATED_TOKEN_KEEP_DAYS + 1)
    DeviceToken.objects.filter(pk=rotated_away.pk).update(revoked_at=long_ago, replaced_at=long_ago)

    pruned = prune_rotated_tokens.apply_async(ignore_result=False).get(timeout=30)

    assert pruned == 1
    assert not DeviceToken.objects.filter(pk=rotated_away.pk).exists()


def test_real_worker_deletes_the_sessions_that_have_ended(worker: LiveProcess) -> None:
    """An ended admin session's row (who signed in, with which one-time-code device) is of no
    use once it has ended: the daily task deletes it, and keeps the live ones."""
    ended, live = SessionStore(), SessionStore()
    for session in (ended, live):
        session["signed_in"] = True
        session.create()
    Session.objects.filter(session_key=ended.session_key).update(expire_date=timezone.now() - timedelta(seconds=1))

    clear_ended_sessions.apply_async(ignore_result=False).get(timeout=30)

    assert list(Session.objects.values_list("session_key", flat=True)) == [live.session_key]
