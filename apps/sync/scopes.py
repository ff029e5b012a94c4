"""Scopes: the audiences a change is addressed to, and the scopes a user's devices read.

A scope is a short string: ``unit.<id>`` (the crew of a unit), ``user.<id>`` (one person),
``program.<id>.<role>`` (everyone holding a program-wide role in a program). Domain apps
decide which scopes a record belongs to; this module decides which scopes a user reads.
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Iterable
from uuid import UUID

from apps.accounts.models import Membership, Role, User
from apps.teams.selectors import crewed_unit_ids


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
    scopes += [unit_scope(unit_id) for unit_id in crewed_unit_ids(user=user)]
    program_roles = Membership.objects.filter(user=user, role__in=Role.program_wide_roles()).values_list(
        "program_id", "role"
    )
    for program_id, role in program_roles:
        scopes.append(program_role_scope(program_id, role))
        if role == Role.ADMINISTRATOR:
            # An administrator works with the program's health records as its case managers
            # do (reads and writes them): what is addressed to them is the administrator's too.
            scopes.append(program_role_scope(program_id, Role.CASE_MANAGER))
    return sorted(set(scopes))


# An audience: every scope one change is addressed to at once. A record seen by a unit's
# crew and its program's case managers and supervisors gets one feed entry for the three,
# not one per scope, and its head is found under that one audience. A single scope is its
# own audience; several share a key, registered in ``apps.sync.models.Audience`` so that a
# reader finds the audiences that include any of its scopes.
AUDIENCE_PREFIX = "audience."
_AUDIENCE_SEPARATOR = "\x1f"  # never appears in a scope


def audience_of(scopes: Iterable[str]) -> str:
    """The audience key of these scopes ("" for none)."""
    return _audience_key(tuple(sorted(set(scopes))))


@functools.lru_cache(maxsize=4096)
def _audience_key(scopes: tuple[str, ...]) -> str:
    if len(scopes) <= 1:
        return scopes[0] if scopes else ""
    digest = hashlib.sha256(_AUDIENCE_SEPARATOR.join(scopes).encode()).hexdigest()
    return f"{AUDIENCE_PREFIX}{digest[:32]}"


def feed_group_name(scope: str) -> str:
    """The channel-layer group that is nudged when a scope's feed grows."""
    return f"feed.{scope}"
