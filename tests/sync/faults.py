"""A TCP proxy that drops connections at random, to sync through as over a bad network.

Per connection it either forwards the exchange, drops it before the request reaches the
server, or forwards the request and drops the answer after the server has sent it (the
server committed; the device never hears). HTTP/1.1 with ``Connection: close`` only.
"""

from __future__ import annotations

import contextlib
import random
import socket
import threading
from dataclasses import dataclass, field


@dataclass
class DroppingProxy:
    upstream_port: int
    seed: int = 0
    drop_before: float = 0.15
    drop_after: float = 0.2
    port: int = 0
    # Its own drops (of a request, or of a whole answer the server had sent: committed, and
    # never told) apart from what the server's being down did to a connection.
    counts: dict[str, int] = field(
        default_factory=lambda: {"forwarded": 0, "dropped_before": 0, "answer_dropped": 0, "server_down": 0}
    )
    _listener: socket.socket | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def start(self) -> DroppingProxy:
        self._random = random.Random(self.seed)
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", 0))
        listener.listen(128)
        self.port = listener.getsockname()[1]
        self._listener = listener
        threading.Thread(target=self._accept, daemon=True).start()
        return self

    def stop(self) -> None:
        if self._listener is not None:
            self._listener.close()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _accept(self) -> None:
        assert self._listener is not None
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _fate(self) -> str:
        with self._lock:
            roll = self._random.random()
        if roll < self.drop_before:
            return "dropped_before"
        if roll < self.drop_before + self.drop_after:
            return "dropped_after"
        return "forwarded"

    def _serve(self, client: socket.socket) -> None:
        fate = self._fate()
        with contextlib.closing(client):
            client.settimeout(30)
            request = _read_request(client)
            if request is None or fate == "dropped_before":
                self._count("dropped_before")
                return
            try:
                with socket.create_connection(("127.0.0.1", self.upstream_port), timeout=30) as upstream:
                    upstream.sendall(request)
                    response = _read_to_end(upstream)
            except OSError:
                self._count("server_down")
                return  # the device sees a dropped connection
            if not response:
                self._count("server_down")  # killed while it worked: no answer
                return
            if fate == "dropped_after":
                self._count("answer_dropped")
                return
            with contextlib.suppress(OSError):
                client.sendall(response)
            self._count("forwarded")

    def _count(self, fate: str) -> None:
        with self._lock:
            self.counts[fate] += 1


def _read_request(connection: socket.socket) -> bytes | None:
    data = b""
    try:
        while b"\r\n\r\n" not in data:
            chunk = connection.recv(65536)
            if not chunk:
                return None
            data += chunk
        head, _, body = data.partition(b"\r\n\r\n")
        length = 0
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value.strip())
        while len(body) < length:
            chunk = connection.recv(65536)
            if not chunk:
                return None
            body += chunk
        return head + b"\r\n\r\n" + body
    except OSError:
        return None


def _read_to_end(connection: socket.socket) -> bytes:
    chunks: list[bytes] = []
    while True:
        chunk = connection.recv(65536)
        if not chunk:
            return b"".join(chunks)
        chunks.append(chunk)
