"""Under ASGI, an HTTP request enters its thread once, not once per middleware hook."""

from __future__ import annotations

import asyncio
from typing import Any
from unittest import mock

from asgiref.sync import SyncToAsync
from asgiref.testing import ApplicationCommunicator
from django.core.handlers.asgi import ASGIHandler

from apps.common.asgi import OneThreadASGIHandler


def answer_counting_thread_entries(handler: Any, path: str) -> tuple[int, int]:
    """The status of a GET of ``path`` through ``handler``, and how many times answering
    it handed work from the event loop to a thread."""
    entries = 0
    enter_thread = SyncToAsync.__call__

    async def counted(self: SyncToAsync[Any, Any], *args: Any, **kwargs: Any) -> Any:
        nonlocal entries
        entries += 1
        return await enter_thread(self, *args, **kwargs)

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "headers": [(b"host", b"testserver")],
        "client": ("127.0.0.1", 50000),
        "server": ("testserver", 80),
    }

    async def get() -> int:
        communicator = ApplicationCommunicator(handler, scope)
        await communicator.send_input({"type": "http.request", "body": b"", "more_body": False})
        start = await communicator.receive_output(timeout=10)
        await communicator.receive_output(timeout=10)  # the body
        await communicator.wait(timeout=10)
        return int(start["status"])

    with mock.patch.object(SyncToAsync, "__call__", counted):
        status = asyncio.run(get())
    return status, entries


def test_an_api_request_enters_its_thread_once_not_per_middleware_hook() -> None:
    ours = answer_counting_thread_entries(OneThreadASGIHandler(), "/api/v1/me/")
    djangos = answer_counting_thread_entries(ASGIHandler(), "/api/v1/me/")

    # The same answer (who is calling? nobody), with the middleware run in one thread.
    assert ours[0] == djangos[0] == 401
    # Entered for the request_started signal, the chain and view, the request_finished signal.
    assert ours[1] <= 3 < 10 < djangos[1]
