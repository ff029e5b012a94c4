"""Who works in the admin workspace, and for which programs."""

from __future__ import annotations

from uuid import UUID

from django.http import HttpRequest

from apps.accounts.models import Role, User

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
