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
    """What goes out: ids, a kind, the short text and a link. Nothing else, by construction.

    ``link`` is the app's path, for push and in-app; ``web_link`` the staff site's page, for
    SMS and email, which a person opens in a browser: a text or email without one names no page.
    """

    notification_id: str
    attempt_id: str
    kind: str
    urgency: str
    text: str
    link: str
    web_link: str = ""
    link_base_url: str = field(default="", repr=False)

    @property
    def is_urgent(self) -> bool:
        return self.urgency == "urgent"

    @property
    def url(self) -> str:
        """The staff site's page in full, or "" when there is none."""
        return f"{self.link_base_url.rstrip('/')}{self.web_link}" if self.web_link else ""

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
        # A text without a page (to a person, such as an appointment reminder, or to staff whose
        # work is in an app) ends with its words: an app's path is nothing a browser could open.
        return f"Tandem: {self.text} {self.url}" if self.url else f"Tandem: {self.text}"

    def email_subject(self) -> str:
        return f"Tandem: {self.text}"

    def email_body(self) -> str:
        where = f"Open it in Tandem: {self.url}" if self.url else "Open Tandem to see it."
        return f"{self.text}\n\n{where}\n\nThis message carries no details on purpose; sign in to see them.\n"


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
