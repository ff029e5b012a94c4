"""A local SMTP server (RFC 5321's plain dialogue) that keeps each session's messages."""

from __future__ import annotations

import contextlib
import socketserver
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field


@dataclass
class SmtpStandIn:
    port: int
    # One list of recipients' messages per SMTP session (connection).
    sessions: list[list[bytes]] = field(default_factory=list)


class _Handler(socketserver.StreamRequestHandler):
    server: _Server

    def reply(self, line: str) -> None:
        self.wfile.write(f"{line}\r\n".encode())

    def handle(self) -> None:
        messages: list[bytes] = []
        self.server.stand_in.sessions.append(messages)
        self.reply("220 standin ESMTP")
        while line := self.rfile.readline():
            verb = line.strip().split(b" ", 1)[0].upper()
            if verb == b"EHLO":
                self.reply("250-standin")
                self.reply("250 8BITMIME")
            elif verb in (b"HELO", b"MAIL", b"RCPT", b"RSET", b"NOOP"):
                self.reply("250 OK")
            elif verb == b"DATA":
                self.reply("354 end with <CRLF>.<CRLF>")
                body = b""
                while (chunk := self.rfile.readline()) not in (b".\r\n", b""):
                    body += chunk
                messages.append(body)
                self.reply("250 queued")
            elif verb == b"QUIT":
                self.reply("221 bye")
                return
            else:
                self.reply("502 not implemented")


class _Server(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True
    stand_in: SmtpStandIn


@contextlib.contextmanager
def running_smtp_stand_in() -> Iterator[SmtpStandIn]:
    server = _Server(("127.0.0.1", 0), _Handler)
    server.stand_in = SmtpStandIn(port=server.server_address[1])
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.stand_in
    finally:
        server.shutdown()
        server.server_close()
