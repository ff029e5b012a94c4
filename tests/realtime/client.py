"""A thin test client for the device websocket, over a real network connection."""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Iterator
from typing import Any

from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect


def open_socket(ws_url: str, **kwargs: Any) -> ClientConnection:
    return connect(f"{ws_url}/ws/v1/device/", open_timeout=10, **kwargs)


def receive(socket: ClientConnection, timeout: float = 5) -> dict[str, Any]:
    message = json.loads(socket.recv(timeout=timeout))
    assert isinstance(message, dict)
    return message


def send(socket: ClientConnection, message: dict[str, Any]) -> None:
    socket.send(json.dumps(message))


@contextlib.contextmanager
def authenticated_socket(ws_url: str, token: str) -> Iterator[ClientConnection]:
    with open_socket(ws_url) as socket:
        send(socket, {"type": "auth", "token": token})
        reply = receive(socket)
        assert reply["type"] == "auth.ok", reply
        yield socket


def close_code(socket: ClientConnection, timeout: float = 5) -> int | None:
    """Read until the server closes the socket; return its close code."""
    try:
        while True:
            socket.recv(timeout=timeout)
    except ConnectionClosed as closed:
        return closed.rcvd.code if closed.rcvd else None


def assert_locked_out(socket: ClientConnection, frame_type: str, *, since: float) -> None:
    """The socket is told it is locked out (hand over the outbox, then purge) and closed with
    4403, within a second of ``since``."""
    assert receive(socket, timeout=1) == {"type": frame_type, "purge_local_data": True, "push_outbox_first": True}
    assert close_code(socket, timeout=1) == 4403
    assert time.monotonic() - since < 1
