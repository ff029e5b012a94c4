"""Hooks: how apps above care react to what happens to care records, without care knowing them.

Follow-ups plan contacts when an encounter ends or a referral is made, and closes steps when a
referral's outcome is recorded. Care calls the registered functions explicitly, inside the
writing transaction, after its own write (no Django signals: the call is visible here).
A hook must not raise for a rule of its own; whatever it writes commits or rolls back with care's.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from apps.accounts.models import User

Hook = Callable[..., None]

_hooks: dict[str, list[Hook]] = {"encounter_saved": [], "referral_saved": [], "outcome_recorded": []}


def register(event: str, hook: Hook) -> None:
    """Register ``hook`` for ``event`` (once; a second registration of the same function is ignored)."""
    if hook not in _hooks[event]:
        _hooks[event].append(hook)


def run(event: str, record: Any, *, actor: User | None) -> None:
    for hook in _hooks[event]:
        hook(record, actor=actor)
