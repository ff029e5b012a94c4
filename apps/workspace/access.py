"""Who works in the admin workspace, and for which programs."""

from __future__ import annotations

from uuid import UUID
from zoneinfo import ZoneInfo

from django.http import HttpRequest
from django.utils import timezone

from apps.accounts.models import Program, Role, User

# The people who work in the admin: they see every record of their programs, and nothing else.
WORKSPACE_ROLES = frozenset({Role.CASE_MANAGER, Role.SUPERVISOR, Role.ADMINISTRATOR})


def workspace_program_ids(user: User) -> list[UUID]:
    """The programs a staff user works for in a workspace role (none for anyone else)."""
    if not (user.is_active and user.is_staff):
        return []
    return sorted(set(user.memberships.filter(role__in=WORKSPACE_ROLES).values_list("program_id", flat=True)))


def request_program_ids(request: HttpRequest) -> list[UUID]:
    """The same, read once per request: every admin on a page asks."""
    cached: list[UUID] | None = getattr(request, "_workspace_program_ids", None)
    if cached is None:
        user = request.user
        cached = workspace_program_ids(user) if isinstance(user, User) else []
        request._workspace_program_ids = cached  # type: ignore[attr-defined]
    return cached


def workspace_time_zone(program_ids: list[UUID]) -> ZoneInfo | None:
    """The clock the workspace shows and reads times on, for a user of these programs: their
    program's time zone; of programs on several clocks, the first program's by name (as the
    dashboard picks). None for a user of no program (the server's clock, UTC, stays)."""
    if not program_ids:
        return None
    zone = Program.objects.filter(pk__in=program_ids).order_by("name", "pk").values_list("time_zone", flat=True).first()
    return ZoneInfo(zone) if zone else None


def request_time_zone(request: HttpRequest) -> ZoneInfo:
    """The same for the request's user, or the server's clock."""
    return workspace_time_zone(request_program_ids(request)) or timezone.get_default_timezone()
