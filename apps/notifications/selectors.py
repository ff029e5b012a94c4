"""Reads of the notifications mechanism, filtered by what the acting user may see."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from uuid import UUID

from django.db.models import Q, QuerySet

from apps.accounts.models import Role, User
from apps.accounts.selectors import programs_where
from apps.notifications.models import AttemptStatus, Channel, Notification, NotificationAttempt

STATUS_ORDER = [*AttemptStatus.progress()]


@dataclass(frozen=True)
class AttemptLine:
    channel: str
    status: str
    device_id: str | None
    error_reason: str


@dataclass(frozen=True)
class DeliverySummary:
    """What became of one notification: "delivered to 3 of 4 devices, acknowledged by one"."""

    notification_id: str
    recipients: int
    devices: int
    devices_delivered: int
    devices_opened: int
    acknowledged_by: list[str]
    fallbacks: list[AttemptLine] = field(default_factory=list)
    failures: list[AttemptLine] = field(default_factory=list)

    def describe(self) -> str:
        acknowledged = len(self.acknowledged_by)
        return (
            f"delivered to {self.devices_delivered} of {self.devices} devices, "
            f"acknowledged by {acknowledged if acknowledged else 'nobody'}"
        )


def _rank(status: str) -> int:
    return STATUS_ORDER.index(AttemptStatus(status)) if status in STATUS_ORDER else -1


def delivery_summary(*, notification: Notification) -> DeliverySummary:
    """Per device the furthest any of its attempts got; fallbacks and failures listed apart."""
    attempts = list(
        NotificationAttempt.objects.filter(notification=notification)
        .order_by("created_at")
        .values("channel", "status", "device_id", "error_reason")
    )
    best_by_device: dict[UUID, int] = {}
    for attempt in attempts:
        if attempt["device_id"] is not None:
            device = attempt["device_id"]
            best_by_device[device] = max(best_by_device.get(device, -1), _rank(attempt["status"]))
    delivered = _rank(AttemptStatus.DELIVERED)
    opened = _rank(AttemptStatus.OPENED)

    def line(attempt: Mapping[str, Any]) -> AttemptLine:
        device_id = attempt["device_id"]
        return AttemptLine(
            channel=str(attempt["channel"]),
            status=str(attempt["status"]),
            device_id=str(device_id) if device_id is not None else None,
            error_reason=str(attempt["error_reason"]),
        )

    return DeliverySummary(
        notification_id=str(notification.pk),
        recipients=notification.recipients.count(),
        devices=len(best_by_device),
        devices_delivered=sum(1 for rank in best_by_device.values() if rank >= delivered),
        devices_opened=sum(1 for rank in best_by_device.values() if rank >= opened),
        acknowledged_by=[
            str(user_id)
            for user_id in notification.recipients.filter(acknowledged_at__isnull=False)
            .order_by("acknowledged_at")
            .values_list("user_id", flat=True)
            if user_id is not None
        ],
        fallbacks=[line(a) for a in attempts if a["channel"] in {Channel.SMS, Channel.EMAIL}],
        failures=[line(a) for a in attempts if a["status"] == AttemptStatus.FAILED],
    )


def notifications_received_by(*, user: User) -> QuerySet[Notification]:
    return Notification.objects.filter(recipients__user=user).order_by("-created_at").distinct()


def notifications_visible_to(*, user: User) -> QuerySet[Notification]:
    """What a user may look at: their own, and every one of a program they oversee."""
    overseen = programs_where(user=user, roles=Role.program_wide_roles())
    return Notification.objects.filter(Q(recipients__user=user) | Q(program__in=overseen)).distinct()


def notifications_overseen_by(*, user: User) -> QuerySet[Notification]:
    """Notifications whose delivery a dispatcher or supervisor may inspect."""
    return Notification.objects.filter(program__in=programs_where(user=user, roles=Role.program_wide_roles()))
