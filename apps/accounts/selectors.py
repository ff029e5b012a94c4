"""Reads for people and devices."""

from __future__ import annotations

import enum
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from uuid import UUID

from django.conf import settings
from django.db.models import QuerySet
from django.utils import timezone

from apps.accounts.models import Device, DeviceToken, Membership, Program, ProgramDeparture, Role, User, hash_token
from apps.common import bulk


class TokenProblem(enum.Enum):
    UNKNOWN = "token_invalid"
    EXPIRED = "token_expired"
    REVOKED = "device_revoked"
    DEACTIVATED = "user_deactivated"

    @property
    def message(self) -> str:
        return {
            TokenProblem.UNKNOWN: "Invalid token.",
            TokenProblem.EXPIRED: "Token expired; sign in again.",
            TokenProblem.REVOKED: "This device has been revoked.",
            TokenProblem.DEACTIVATED: "This account has been deactivated.",
        }[self]

    @property
    def locks_out(self) -> bool:
        """The device may no longer sign in at all: it hands over its outbox, then purges."""
        return self in (TokenProblem.REVOKED, TokenProblem.DEACTIVATED)


class TokenRejected(Exception):
    def __init__(self, problem: TokenProblem, *, outbox_token: DeviceToken | None = None) -> None:
        super().__init__(problem.message)
        self.problem = problem
        # The token of a locked-out device that may still hand over its outbox (see
        # ``lockout_of``); None for a token that may not.
        self.outbox_token = outbox_token

    def instructions(self) -> dict[str, bool]:
        """What the device must do, said with the refusal: a locked-out device hands over its
        outbox (when this token may) and then wipes what it holds; others, nothing."""
        if not self.problem.locks_out:
            return {}
        return {"purge_local_data": True, "push_outbox_first": self.outbox_token is not None}


def device_token_for(*, raw_token: str) -> DeviceToken:
    """The usable token behind a raw value; raises TokenRejected saying why not."""
    if not raw_token.isascii():
        # Tokens are URL-safe ASCII; a websocket's JSON may carry what UTF-8 cannot even hash.
        raise TokenRejected(TokenProblem.UNKNOWN)
    return _usable(_tokens().filter(key_hash=hash_token(raw_token)).first())


def device_token_recheck(*, token_id: UUID) -> DeviceToken:
    """The token as it stands now, for a socket that authenticated with it a while ago;
    raises TokenRejected once it may no longer be used."""
    return _usable(_tokens().filter(pk=token_id).first())


def token_usable_until(token: DeviceToken) -> datetime:
    """When the token stops working by the clock alone: it expires, or the grace a rotation
    gave it ends. Revocations and a successor's first use end it sooner."""
    if token.replaced_at is None:
        return token.expires_at
    return min(token.expires_at, _grace_over(token))


def _tokens() -> QuerySet[DeviceToken]:
    return DeviceToken.objects.select_related("device", "device__user")


def _grace_over(token: DeviceToken) -> datetime:
    assert token.replaced_at is not None
    return token.replaced_at + timedelta(minutes=settings.DEVICE_TOKEN_ROTATION_GRACE_MINUTES)


def _usable(token: DeviceToken | None) -> DeviceToken:
    if token is None:
        raise TokenRejected(TokenProblem.UNKNOWN)
    now = timezone.now()
    # Revoking a device revokes its tokens with it; one revoked before was rotated away, as is
    # one replaced longer ago than the grace a rotation gives it.
    ended_at = token.revoked_at
    if token.replaced_at is not None:
        grace_over = _grace_over(token)
        if grace_over <= now and (ended_at is None or grace_over < ended_at):
            ended_at = grace_over
    rotated_away = ended_at is not None and (token.device.revoked_at is None or ended_at < token.device.revoked_at)
    lockout = lockout_of(token)
    if rotated_away and lockout is not TokenProblem.REVOKED:
        # A copy left behind by a rotation: as good as unknown to whoever holds it (a revoked
        # device's copies are still told to purge).
        raise TokenRejected(TokenProblem.UNKNOWN)
    if lockout is not None:
        hands_over = not rotated_away and _may_hand_over(token, now)
        raise TokenRejected(lockout, outbox_token=token if hands_over else None)
    if token.is_expired(now):
        raise TokenRejected(TokenProblem.EXPIRED)
    return token


def _may_hand_over(token: DeviceToken, now: datetime) -> bool:
    """What a locked-out tablet still holds may be the only copy of a note, so it may hand it
    over for a while, not forever: a revoked device for DEVICE_HANDOVER_DAYS after it was
    revoked (expired token or not: one unseen for a month was revoked for that), a
    deactivated user's until its token expires."""
    if token.device.revoked_at is not None:
        return now < token.device.revoked_at + timedelta(days=settings.DEVICE_HANDOVER_DAYS)
    return not token.is_expired(now)


def lockout_of(token: DeviceToken) -> TokenProblem | None:
    """Why the device of this token may no longer sign in at all (revoked, or its user
    deactivated), or None. Such a device may still push what it holds, which is kept for a
    supervisor's review and never applied."""
    if token.device.is_revoked:
        return TokenProblem.REVOKED
    if not token.device.user.is_active:
        return TokenProblem.DEACTIVATED
    return None


def device_lockout_held(*, device_id: UUID) -> TokenProblem | None:
    """``lockout_of`` the device as committed now, read under a lock of its row and its
    user's: a revocation or a deactivation not committed yet waits for the caller's
    transaction to end, so that what the caller stores meanwhile is on one side of it."""
    # A fixed statement, prepared once per connection: every push runs it (the ORM's query
    # cost about a millisecond of Python a push).
    with bulk.server_cursor() as cursor:
        cursor.execute(_DEVICE_LOCKOUT_HELD_SQL, [device_id])
        row = cursor.fetchone()
    if row is None:
        raise Device.DoesNotExist(device_id)
    revoked_at, user_is_active = row
    if revoked_at is not None:
        return TokenProblem.REVOKED
    if not user_is_active:
        return TokenProblem.DEACTIVATED
    return None


_DEVICE_LOCKOUT_HELD_SQL = (
    "SELECT d.revoked_at, u.is_active FROM accounts_device AS d"
    " JOIN accounts_user AS u ON u.id = d.user_id"
    " WHERE d.id = %b FOR NO KEY UPDATE OF d, u"
)


def devices_not_locked_out(*, device_ids: Iterable[UUID]) -> QuerySet[Device]:
    """Those of these devices not locked out (``lockout_of``): not revoked, their user active."""
    return Device.objects.filter(pk__in=bulk.any_of(device_ids, "uuid"), revoked_at=None, user__is_active=True)


def device_list(*, user: User) -> QuerySet[Device]:
    return Device.objects.filter(user=user).order_by("-created_at")


def programs_of(*, user: User) -> QuerySet[Program]:
    return Program.objects.filter(memberships__user=user).distinct()


@dataclass(frozen=True)
class ProgramsJoined:
    works_for: frozenset[UUID] = frozenset()
    left: frozenset[UUID] = frozenset()  # holds no role there now (ProgramDeparture)

    @property
    def ever(self) -> frozenset[UUID]:
        return self.works_for | self.left


def programs_joined(*, user_ids: Iterable[UUID]) -> dict[UUID, ProgramsJoined]:
    """By user: the programs each works for, and those they worked for and left. Two reads,
    however many users."""
    users = bulk.any_of(set(user_ids), "uuid")
    works_for: dict[UUID, set[UUID]] = defaultdict(set)
    left: dict[UUID, set[UUID]] = defaultdict(set)
    for model, found in ((Membership, works_for), (ProgramDeparture, left)):
        for user_id, program_id in model.objects.filter(user_id__in=users).values_list("user_id", "program_id"):
            found[user_id].add(program_id)
    return {
        user_id: ProgramsJoined(frozenset(works_for[user_id]), frozenset(left[user_id] - works_for[user_id]))
        for user_id in works_for.keys() | left.keys()
    }


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
