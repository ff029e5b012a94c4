"""Every payload the notifications tests see leave the system, kept for one scan at the end.

Stand-ins add what providers received (Web Push decrypted), socket tests add the frames
devices received; the outbox folders hold what the default backends wrote.
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Payload:
    channel: str  # fcm, apns, webpush, sms, email, in_app, outbox
    content: Any  # the decoded body as the recipient's device or phone gets it


_lock = threading.Lock()
PRODUCED: list[Payload] = []


def record(channel: str, content: Any) -> None:
    with _lock:
        PRODUCED.append(Payload(channel, content))


def text_of(content: Any) -> str:
    return content if isinstance(content, str) else json.dumps(content, sort_keys=True)
