"""Websocket messages a crew sends about its assignments (registered with apps.realtime).

    client → {"type": "assignment.acknowledge", "assignment": "<id>", "observed_at": "<ISO 8601, optional>"}
    server → {"type": "assignment.acknowledged", "assignment": {...}}   (same answer to every retry / member)
    client → {"type": "assignment.check_in", "assignment": "<id>", "observed_at": "..."}
    server → {"type": "assignment.checked_in", "assignment": {...}}

A refusal is an error frame naming the field: `superseded` (the offer went to another unit),
`not_found` (no such assignment of your unit's), `invalid_message`, `time_in_future`, ...
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from apps.accounts.models import DeviceToken
from apps.audit.models import AccessChannel
from apps.audit.services import Accessor
from apps.common import calendar
from apps.common.api.errors import DomainError
from apps.dispatch import selectors, services
from apps.dispatch.payloads import assignment_payload
from apps.realtime.handlers import HandlerError, register

# What a crew's message carries beside its type and request_id (which the socket reads).
_FIELDS = frozenset({"type", "request_id", "assignment", "observed_at"})


def _refuse_unknown_fields(message: dict[str, Any]) -> None:
    """A field the message does not take is refused, naming it, as over REST: a misspelt
    `observed_at` would otherwise be dropped without a word and the report kept without
    the time the crew recorded."""
    unknown = sorted(set(message) - _FIELDS)
    if unknown:
        raise HandlerError("invalid_message", f"Unknown field {unknown[0]!r}.", field=unknown[0])


def _assignment_id(message: dict[str, Any]) -> uuid.UUID:
    raw = message.get("assignment")
    if not isinstance(raw, str):
        raise HandlerError("invalid_message", "'assignment' must be an assignment id.", field="assignment")
    try:
        return uuid.UUID(raw)
    except ValueError:
        raise HandlerError("invalid_message", "'assignment' is not a valid id.", field="assignment") from None


def _observed_at(message: dict[str, Any]) -> datetime | None:
    raw = message.get("observed_at")
    if raw is None:
        return None
    parsed = calendar.offset_moment(raw)  # as a push reads it
    if parsed is None:
        raise HandlerError(
            "invalid_message", "'observed_at' must be an ISO 8601 time with a UTC offset.", field="observed_at"
        )
    return parsed


def _crew_assignment(token: DeviceToken, assignment_id: uuid.UUID) -> None:
    """Only the crew of the assigned unit may answer it; anyone else learns nothing."""
    if not selectors.crew_assignments(user=token.device.user).filter(pk=assignment_id).exists():
        raise HandlerError("not_found", "No such assignment for your unit.", field="assignment")


def _refused(error: DomainError) -> HandlerError:
    return HandlerError(error.code, error.detail, field=error.field)


def handle_acknowledge(token: DeviceToken, message: dict[str, Any]) -> dict[str, Any]:
    _refuse_unknown_fields(message)
    assignment_id = _assignment_id(message)
    observed_at = _observed_at(message)
    _crew_assignment(token, assignment_id)
    try:
        assignment = services.assignment_acknowledge(
            assignment_id=assignment_id,
            user=token.device.user,
            device=token.device,
            observed_at=observed_at,
            accessor=Accessor.from_token(token, AccessChannel.WEBSOCKET),
        )
    except DomainError as error:
        raise _refused(error) from None
    return {"type": "assignment.acknowledged", "assignment": assignment_payload(assignment, with_incident=False)}


def handle_check_in(token: DeviceToken, message: dict[str, Any]) -> dict[str, Any]:
    _refuse_unknown_fields(message)
    assignment_id = _assignment_id(message)
    observed_at = _observed_at(message)
    _crew_assignment(token, assignment_id)
    try:
        assignment = services.assignment_check_in(
            assignment_id=assignment_id,
            user=token.device.user,
            device=token.device,
            observed_at=observed_at,
            accessor=Accessor.from_token(token, AccessChannel.WEBSOCKET),
        )
    except DomainError as error:
        raise _refused(error) from None
    return {"type": "assignment.checked_in", "assignment": assignment_payload(assignment, with_incident=False)}


def register_all() -> None:
    register("assignment.acknowledge", handle_acknowledge)
    register("assignment.check_in", handle_check_in)
