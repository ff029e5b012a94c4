"""Writes for people and devices."""

from __future__ import annotations

import logging
import secrets
from collections.abc import Callable
from datetime import timedelta
from importlib import import_module
from uuid import UUID

from asgiref.sync import async_to_sync
from celery.exceptions import SoftTimeLimitExceeded
from channels.layers import get_channel_layer
from django.conf import settings
from django.db import transaction
from django.db.models import F, Q, QuerySet
from django.utils import timezone

from apps.accounts.models import Device, DeviceToken, Membership, ProgramDeparture, User, hash_token
from apps.accounts.selectors import TokenProblem, TokenRejected, device_token_recheck

logger = logging.getLogger(__name__)

# What a user's devices may see follows their program roles (here) and their units (the
# teams app). The mechanisms that serve devices (the change feed, the websockets) register
# with ``on_access_change`` and are told, inside the transaction that made the change, whose
# access changed; the apps that make such changes know nothing of them.
AccessChangeListener = Callable[[UUID], None]

_access_change_listeners: list[AccessChangeListener] = []


def on_access_change(listener: AccessChangeListener) -> None:
    """Register a callable taking a user id, run whenever what that user may see changes."""
    if listener not in _access_change_listeners:
        _access_change_listeners.append(listener)


def access_changed(*, user_id: UUID) -> None:
    """Tell the listeners; call inside the transaction that changed a role or a crew."""
    for listener in _access_change_listeners:
        listener(user_id)


# Departures from programs, kept however a membership ends: a script or service deleting
# it, or the admin's inline deleting it or moving it to another program in place.


def membership_deleted(*, instance: Membership, origin: object, **kwargs: object) -> None:
    """Membership's post_delete. Not when the user or the program itself is deleted, which
    takes their departures with them."""
    origin_model = origin.model if isinstance(origin, QuerySet) else type(origin)
    if origin_model is Membership:
        _keep_departure_if_last(user_id=instance.user_id, program_id=instance.program_id, ending=instance.pk)


def membership_saving(*, instance: Membership, raw: bool, **kwargs: object) -> None:
    """Membership's pre_save: note the tie a membership moved to another program (or user)
    ends, for ``membership_saved`` to weigh once the move is written."""
    instance._tie_ended = None
    if raw or instance._state.adding:
        return
    stored = Membership.objects.filter(pk=instance.pk).values_list("user_id", "program_id").first()
    if stored is not None and stored != (instance.user_id, instance.program_id):
        instance._tie_ended = stored


def membership_saved(*, instance: Membership, **kwargs: object) -> None:
    """Membership's post_save: after the write, as after a delete, so that two of a user's
    roles moved at once, each in its own transaction, cannot each see the other still there."""
    ended = instance._tie_ended
    if ended is not None:
        instance._tie_ended = None
        _keep_departure_if_last(user_id=ended[0], program_id=ended[1], ending=instance.pk)


def _keep_departure_if_last(*, user_id: UUID, program_id: UUID, ending: UUID) -> None:
    with transaction.atomic():
        # In turn with any other change of the user's roles: two roles in one program ended
        # at once would each see the other still there, and no departure would be kept.
        # Not a key lock: rows that refer to the user (a device, an audit entry) go on being written.
        list(User.objects.select_for_update(no_key=True).filter(pk=user_id).values_list("pk"))
        if Membership.objects.filter(user_id=user_id, program_id=program_id).exclude(pk=ending).exists():
            return  # another role there still holds
        ProgramDeparture.objects.bulk_create(
            [ProgramDeparture(user_id=user_id, program_id=program_id, left_at=timezone.now())],
            update_conflicts=True,
            unique_fields=["user", "program"],
            update_fields=["left_at"],
        )


TOKEN_PREFIX = "tdm_"  # noqa: S105 — a marker that makes leaked tokens greppable, not a secret


def device_group_name(device_id: object) -> str:
    """The channel-layer group every open websocket of one device joins."""
    return f"device.{device_id}"


def device_token_group_name(token_id: object) -> str:
    """The channel-layer group of the open websockets authenticated with one token."""
    return f"device_token.{token_id}"


def _new_raw_token() -> str:
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


@transaction.atomic
def device_token_issue(*, device: Device, replaces: DeviceToken | None = None) -> tuple[DeviceToken, str]:
    """Issue a fresh token for a device; the raw value is returned once and never stored."""
    raw_token = _new_raw_token()
    token = DeviceToken.objects.create(
        device=device,
        key_hash=hash_token(raw_token),
        key_prefix=raw_token[: len(TOKEN_PREFIX) + 6],
        expires_at=timezone.now() + timedelta(days=settings.DEVICE_TOKEN_TTL_DAYS),
        replaces=replaces,
    )
    return token, raw_token


@transaction.atomic
def device_register(*, user: User, name: str, platform: str) -> tuple[Device, DeviceToken, str]:
    device = Device.objects.create(user=user, name=name, platform=platform, last_seen_at=timezone.now())
    token, raw_token = device_token_issue(device=device)
    return device, token, raw_token


@transaction.atomic
def device_token_rotate(*, token: DeviceToken) -> tuple[DeviceToken, str]:
    """Issue a token to replace this one. This one keeps working until the new one is first
    used (``device_authenticated``), for DEVICE_TOKEN_ROTATION_GRACE_MINUTES at most: a device
    that never got the answer (it lost signal in a tunnel) is not locked out, but rotates
    again, and the token it never received stops working instead."""
    now = timezone.now()
    locked = DeviceToken.objects.select_for_update().get(pk=token.pk)  # one rotation at a time
    if locked.revoked_at is not None:
        # Its successor was used while this request was on its way (that one stands, and this
        # one may not mint another), or its device was revoked: refused as authenticating
        # would refuse it now, so a revoked device is told to hand over its outbox and wipe.
        device_token_recheck(token_id=token.pk)
        raise TokenRejected(TokenProblem.UNKNOWN)
    unreceived = DeviceToken.objects.filter(replaces=token, revoked_at=None)
    changed = [token.pk, *unreceived.values_list("pk", flat=True)]
    unreceived.update(revoked_at=now)
    if locked.replaced_at is None:  # rotating again does not lengthen the grace period
        DeviceToken.objects.filter(pk=token.pk).update(replaced_at=now)
    transaction.on_commit(lambda: _tell_token_sockets(changed))
    return device_token_issue(device=token.device, replaces=token)


def device_authenticated(*, token: DeviceToken) -> None:
    """A request or a socket was authenticated with this token: its device was seen, and if a
    rotation issued the token, the rotation is complete and the token it replaced stops
    working. Writes once per rotation; other requests only read the token's field."""
    device_mark_seen(device=token.device)
    if token.replaces_id is None:
        return
    replaced_id = token.replaces_id
    with transaction.atomic():
        DeviceToken.objects.filter(pk=replaced_id, revoked_at=None).update(revoked_at=timezone.now())
        DeviceToken.objects.filter(pk=token.pk).update(replaces=None)
        transaction.on_commit(lambda: _tell_token_sockets([replaced_id]))
    token.replaces_id = None


def device_revoke(*, device: Device, revoked_by: User | None, reason: str = "") -> Device:
    """Revoke a device and every token it holds, and close its open websockets.

    Idempotent: revoking a revoked device changes nothing and sends nothing again.
    """
    now = timezone.now()
    with transaction.atomic():
        newly_revoked = Device.objects.filter(pk=device.pk, revoked_at=None).update(
            revoked_at=now, revoked_by=revoked_by, revoke_reason=reason[:200]
        )
        DeviceToken.objects.filter(device=device, revoked_at=None).update(revoked_at=now)
        if newly_revoked:
            transaction.on_commit(lambda: _disconnect_device_sockets([device.pk], "device.revoked"))
    device.refresh_from_db()
    return device


def user_deactivated(*, user: User) -> None:
    """Close the open websockets of a user just deactivated; call inside the transaction that
    deactivated them. Their tokens stop working with the commit (``device_token_for``)."""
    device_ids = list(Device.objects.filter(user=user, revoked_at=None).values_list("pk", flat=True))
    if device_ids:
        transaction.on_commit(lambda: _disconnect_device_sockets(device_ids, "user.deactivated"))


def _disconnect_device_sockets(device_ids: list[UUID], event_type: str) -> None:
    _tell_sockets([device_group_name(device_id) for device_id in device_ids], event_type)


def _tell_token_sockets(token_ids: list[UUID]) -> None:
    # A socket checks its token when it authenticates; these tokens changed since, so their
    # sockets check again (and close, if the token no longer works).
    _tell_sockets([device_token_group_name(token_id) for token_id in token_ids], "token.changed")


def _tell_sockets(groups: list[str], event_type: str) -> None:
    channel_layer = get_channel_layer()
    if channel_layer is None:
        return
    try:
        for group in groups:
            async_to_sync(channel_layer.group_send)(group, {"type": event_type})
    except SoftTimeLimitExceeded:
        # A task's soft time limit (revoking the unseen devices) struck while it waited on the
        # sockets: the task stops after the change it committed; the next run takes the rest.
        raise
    except Exception:
        # Sent after commit: the revocation, rotation or deactivation stands; each socket finds
        # its token refused at its next feed read or message, the device at its next request.
        # Raised, it would answer the committed change with a 500, which the client retries.
        logger.exception("%s could not be told to the sockets of %s", event_type, groups)


def device_mark_seen(*, device: Device) -> None:
    """Record that the device was just seen, writing at most once a minute per device."""
    now = timezone.now()
    stale_before = now - timedelta(minutes=1)
    if device.last_seen_at is not None and device.last_seen_at >= stale_before:
        return  # seen within the minute (as read with its token): most requests write nothing
    Device.objects.filter(Q(last_seen_at__lt=stale_before) | Q(last_seen_at=None), pk=device.pk).update(
        last_seen_at=now
    )


# A token rotated away answers as an unknown token does; its row is kept this long after, then
# deleted, so that the hashes of dead credentials do not pile up one per rotation.
ROTATED_TOKEN_KEEP_DAYS = 30


def device_tokens_prune() -> int:
    """Delete the tokens rotated away more than ROTATED_TOKEN_KEEP_DAYS ago; returns how many.
    A revoked device's tokens stay: they tell whoever holds one to purge. So does a token whose
    device was not seen since it ended: it may be the only one a lost tablet holds, and the
    tablet must still be told to purge once it is revoked for going unseen."""
    cutoff = timezone.now() - timedelta(days=ROTATED_TOKEN_KEEP_DAYS)
    grace = timedelta(minutes=settings.DEVICE_TOKEN_ROTATION_GRACE_MINUTES)
    rotated_away = Q(revoked_at__lt=cutoff, device__last_seen_at__gt=F("revoked_at")) | Q(
        replaced_at__lt=cutoff - grace, device__last_seen_at__gt=F("replaced_at") + grace
    )
    deleted, _by_model = DeviceToken.objects.filter(rotated_away, device__revoked_at=None).delete()
    return deleted


def sessions_clear_ended() -> None:
    """Delete the stored sessions that have ended, through the configured session engine."""
    import_module(settings.SESSION_ENGINE).SessionStore.clear_expired()


def devices_revoke_unseen(*, unseen_for_days: int) -> int:
    """Revoke every device not seen for the given number of days; returns how many."""
    cutoff = timezone.now() - timedelta(days=unseen_for_days)
    # A device never seen since it was registered counts from its registration.
    unseen = Q(last_seen_at__lt=cutoff) | Q(last_seen_at=None, created_at__lt=cutoff)
    stale = Device.objects.filter(unseen, revoked_at=None).order_by("pk")
    revoked = 0
    for device in stale.iterator():
        with transaction.atomic():
            # Read again under its lock: a device seen since the list was read is in a crew's
            # hands again, and revoking it would have it wipe what the crew holds.
            if not stale.select_for_update().filter(pk=device.pk).exists():
                continue
            device_revoke(device=device, revoked_by=None, reason=f"not seen for {unseen_for_days} days")
        revoked += 1
    return revoked
