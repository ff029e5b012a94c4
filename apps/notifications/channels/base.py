from __future__ import annotations

import enum
from dataclasses import dataclass, field
from email.utils import parsedate_to_datetime
from typing import Protocol

from django.utils import timezone

PUSH_TITLE = "Tandem"


class Outcome(enum.Enum):
    SENT = "sent"
    RETRY = "retry"  # the provider asked us to come back later (429, 5xx, network)
    INVALID_ADDRESS = "invalid_address"  # the token / subscription is gone: stop using it
    FAILED = "failed"  # refused for good (bad request, unsubscribed number)


@dataclass(frozen=True)
class SendResult:
    outcome: Outcome
    provider_message_id: str = ""
    error: str = ""
    retry_after: float | None = None

    @classmethod
    def sent(cls, provider_message_id: str = "") -> SendResult:
        return cls(Outcome.SENT, provider_message_id=provider_message_id[:200])

    @classmethod
    def retry(cls, error: str, retry_after: float | None = None) -> SendResult:
        return cls(Outcome.RETRY, error=error[:200], retry_after=retry_after)

    @classmethod
    def invalid_address(cls, error: str) -> SendResult:
        return cls(Outcome.INVALID_ADDRESS, error=error[:200])

    @classmethod
    def failed(cls, error: str) -> SendResult:
        return cls(Outcome.FAILED, error=error[:200])


@dataclass(frozen=True)
class Message:
    """What goes out: ids, a kind, the short text and a link. Nothing else, by construction."""

    notification_id: str
    attempt_id: str
    kind: str
    urgency: str
    text: str
    link: str
    link_base_url: str = field(default="", repr=False)

    @property
    def is_urgent(self) -> bool:
        return self.urgency == "urgent"

    @property
    def url(self) -> str:
        return f"{self.link_base_url.rstrip('/')}{self.link}" if self.link else self.link_base_url

    def data(self) -> dict[str, str]:
        """The key/value data that rides along with a push (all strings, as FCM requires)."""
        return {"notification_id": self.notification_id, "kind": self.kind, "link": self.link}

    def in_app_payload(self) -> dict[str, str]:
        return {
            "type": "notification",
            "id": self.notification_id,
            "kind": self.kind,
            "urgency": self.urgency,
            "text": self.text,
            "link": self.link,
        }

    def sms_body(self) -> str:
        # A text without a link (to a person, such as an appointment reminder) ends with its
        # words: the staff site's address is nothing its reader could open.
        return f"Tandem: {self.text} {self.url}" if self.link else f"Tandem: {self.text}"

    def email_subject(self) -> str:
        return f"Tandem: {self.text}"

    def email_body(self) -> str:
        return (
            f"{self.text}\n\nOpen it in Tandem: {self.url}\n\n"
            "This message carries no details on purpose; sign in to see them.\n"
        )


@dataclass(frozen=True)
class PushTarget:
    provider: str
    token: str
    p256dh: str = ""
    auth_secret: str = ""


class PushBackend(Protocol):
    def send(self, target: PushTarget, message: Message) -> SendResult: ...


class AddressBackend(Protocol):
    """SMS and email: one address (phone number or email) per send."""

    def send(self, address: str, message: Message) -> SendResult: ...


def retry_after_seconds(value: str | None) -> float | None:
    """Retry-After as seconds, from either form HTTP allows (delta-seconds or an HTTP date)."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, (when - timezone.now()).total_seconds())
