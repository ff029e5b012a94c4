"""Reads for people and devices."""

from __future__ import annotations

import enum

from django.db.models import QuerySet
from django.utils import timezone

from apps.accounts.models import Device, DeviceToken, Program, Role, User, hash_token


class TokenProblem(enum.Enum):
    UNKNOWN = "token_invalid"
    EXPIRED = "token_expired"
    REVOKED = "device_revoked"

    @property
    def message(self) -> str:
        return {
            TokenProblem.UNKNOWN: "Invalid token.",
            TokenProblem.EXPIRED: "Token expired; sign in again.",
            TokenProblem.REVOKED: "This device has been revoked.",
        }[self]


class TokenRejected(Exception):
    def __init__(self, problem: TokenProblem) -> None:
        super().__init__(problem.message)
        self.problem = problem


def device_token_for(*, raw_token: str) -> DeviceToken:
    """The usable token behind a raw value; raises TokenRejected saying why not."""
    token = DeviceToken.objects.select_related("device", "device__user").filter(key_hash=hash_token(raw_token)).first()
    if token is None or not token.device.user.is_active:
        raise TokenRejected(TokenProblem.UNKNOWN)
    if token.device.is_revoked:
        raise TokenRejected(TokenProblem.REVOKED)
    if token.is_revoked:
        # A rotated-away token: as good as unknown to whoever holds it.
        raise TokenRejected(TokenProblem.UNKNOWN)
    if token.is_expired(timezone.now()):
        raise TokenRejected(TokenProblem.EXPIRED)
    return token


def device_list(*, user: User) -> QuerySet[Device]:
    return Device.objects.filter(user=user).order_by("-created_at")


def programs_of(*, user: User) -> QuerySet[Program]:
    return Program.objects.filter(memberships__user=user).distinct()


def programs_where(*, user: User, roles: frozenset[Role]) -> QuerySet[Program]:
    """Programs in which the user holds at least one of the given roles."""
    return Program.objects.filter(memberships__user=user, memberships__role__in=roles).distinct()
