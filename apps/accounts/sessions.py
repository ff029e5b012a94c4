"""A staff session's absolute lifetime: however active, it ends a fixed time after sign-in.

The idle timeout (``SESSION_IDLE_TIMEOUT_SECONDS``) is pushed out by every request, so on its
own a session kept busy (a tab that reloads itself, a stolen cookie in use) would last for
ever. Each sign-in writes its time into the session; a request of a session signed in more
than ``SESSION_ABSOLUTE_TIMEOUT_SECONDS`` ago signs it out before anything else sees it, and
its user signs in again, with their one-time code.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from django.conf import settings
from django.contrib.auth import SESSION_KEY, logout
from django.contrib.sessions.backends.base import SessionBase
from django.http import HttpRequest, HttpResponseBase

SIGNED_IN_AT = "tandem_signed_in_at"


def session_signed_in(*, request: HttpRequest, **_signal: Any) -> None:
    """Receiver of ``user_logged_in``: the session's lifetime starts now."""
    request.session[SIGNED_IN_AT] = time.time()


def session_outlived(session: SessionBase) -> bool:
    """Whether a signed-in session is past its absolute lifetime. One with no time of sign-in
    (signed in before the lifetime was kept) is too: its age is unknown."""
    signed_in_at = session.get(SIGNED_IN_AT)
    if not isinstance(signed_in_at, int | float):
        return True
    return time.time() - signed_in_at >= settings.SESSION_ABSOLUTE_TIMEOUT_SECONDS


class SessionLifetimeMiddleware:
    """Signs out a session past its absolute lifetime, before the request is served. Requests
    without a signed-in session (the API's, with device tokens) pass untouched."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponseBase]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponseBase:
        if SESSION_KEY in request.session and session_outlived(request.session):
            logout(request)  # flushes the session: its one-time code goes with it
        return self.get_response(request)
