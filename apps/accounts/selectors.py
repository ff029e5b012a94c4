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
    if not raw_token.isascii():
        # Tokens are URL-safe ASCII; a websocket's JSON may carry what UTF-8 cannot even hash.
        raise TokenRejected(TokenProblem.UNKNOWN)
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


def overseeing_roles() -> frozenset[Role]:
    """Roles that oversee a program: they see and revoke the devices of everyone in it, and
    its dashboard."""
    return frozenset({Role.SUPERVISOR, Role.ADMINISTRATOR})


def program_of_member(*, user: User, slug: str) -> Program | None:
    """A program the user works for (None for any other: it does not exist for them)."""
    return programs_of(user=user).filter(slug=slug).first()


def may_oversee_devices(*, user: User, program: Program) -> bool:
    return programs_where(user=user, roles=overseeing_roles()).filter(pk=program.pk).exists()


def program_device_list(*, program: Program) -> QuerySet[Device]:
    """Devices of everyone who works for the program, newest first."""
    return (
        Device.objects.filter(user__memberships__program=program)
        .select_related("user")
        .distinct()
        .order_by("-created_at", "pk")
    )
