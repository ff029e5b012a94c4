"""Client messages that domain apps answer over the websocket.

A domain app registers a handler for a message type in its AppConfig.ready(); the consumer
authenticates, parses and forwards, and the handler calls the app's own services:

    register("assignment.acknowledge", handle_acknowledge)

A handler runs in a worker thread with database access, receives the authenticated device
token and the message, and returns the reply frame (or None for no reply). It raises
HandlerError for a refusal the client should see as an error frame.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from apps.accounts.models import DeviceToken

Handler = Callable[[DeviceToken, dict[str, Any]], dict[str, Any] | None]

_handlers: dict[str, Handler] = {}


class HandlerError(Exception):
    def __init__(self, code: str, detail: str, *, field: str | None = None) -> None:
        super().__init__(detail)
        self.code = code
        self.detail = detail
        self.field = field


def register(message_type: str, handler: Handler) -> None:
    if message_type in _handlers and _handlers[message_type] is not handler:
        raise ValueError(f"a handler for {message_type!r} is already registered")
    _handlers[message_type] = handler


def handler_for(message_type: str) -> Handler | None:
    return _handlers.get(message_type)


def registered_types() -> frozenset[str]:
    """Every client message type a domain app answers (the permission matrix test walks them)."""
    return frozenset(_handlers)
