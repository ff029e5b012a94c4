"""Scopes: the audiences a change is addressed to, and the scopes a user's devices read.

A scope is a short string: ``unit.<id>`` (the crew of a unit), ``user.<id>`` (one person),
``program.<id>.<role>`` (everyone holding a program-wide role in a program). Domain apps
decide which scopes a record belongs to; this module decides which scopes a user reads.
"""

from __future__ import annotations

import functools
from uuid import UUID

from apps.accounts.models import Membership, Role, User
from apps.teams.models import UnitMember


# Cached: every record published names its scopes, and a push publishes hundreds of records
# of the same few units and programs.
@functools.lru_cache(maxsize=4096)
def unit_scope(unit_id: UUID | str) -> str:
    return f"unit.{unit_id}"


def user_scope(user_id: UUID | str) -> str:
    return f"user.{user_id}"


@functools.lru_cache(maxsize=4096)
def program_role_scope(program_id: UUID | str, role: Role | str) -> str:
    return f"program.{program_id}.{Role(role).value}"


def scopes_for_user(user: User) -> list[str]:
    """Every scope the user's devices may read, and nothing more."""
    scopes = [user_scope(user.pk)]
    scopes += [
        unit_scope(unit_id) for unit_id in UnitMember.objects.filter(user=user).values_list("unit_id", flat=True)
    ]
    program_roles = Membership.objects.filter(user=user, role__in=Role.program_wide_roles()).values_list(
        "program_id", "role"
    )
    scopes += [program_role_scope(program_id, role) for program_id, role in program_roles]
    return sorted(set(scopes))


def feed_group_name(scope: str) -> str:
    """The channel-layer group that is nudged when a scope's feed grows."""
    return f"feed.{scope}"
