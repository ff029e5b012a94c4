"""Web Push (RFC 8030) with VAPID (RFC 8292) and aes128gcm payload encryption (RFC 8291),
through pywebpush. The endpoint is the browser's push service, taken from the subscription.
"""

from __future__ import annotations

import json

import requests
from django.core.exceptions import ImproperlyConfigured
from pywebpush import WebPushException, webpush

from apps.notifications.channels.base import PUSH_TITLE, Message, PushTarget, SendResult, retry_after_seconds


class WebPushConfigurationError(ImproperlyConfigured):
    pass


class WebPushBackend:
    def __init__(self, *, private_key: str, subject: str, timeout: float) -> None:
        if not private_key:
            raise WebPushConfigurationError("Set VAPID_PRIVATE_KEY (and VAPID_PUBLIC_KEY for clients).")
        self.private_key = private_key
        self.subject = subject
        self.timeout = timeout

    def send(self, target: PushTarget, message: Message) -> SendResult:
        payload = {"title": PUSH_TITLE, "body": message.text, **message.data()}
        try:
            response = webpush(
                subscription_info={
                    "endpoint": target.token,
                    "keys": {"p256dh": target.p256dh, "auth": target.auth_secret},
                },
                data=json.dumps(payload),
                vapid_private_key=self.private_key,
                # pywebpush adds aud and exp to the dict it is given: a fresh one per send.
                vapid_claims={"sub": self.subject},
                ttl=3600,
                headers={
                    "Urgency": "high" if message.is_urgent else "normal",
                    # A newer message with the same topic replaces one still waiting at the push service.
                    "Topic": message.notification_id.replace("-", ""),
                },
                timeout=self.timeout,
                content_encoding="aes128gcm",
            )
        except WebPushException as error:
            return self._error(error)
        except requests.RequestException as error:
            return SendResult.retry(f"webpush: {type(error).__name__}")
        assert isinstance(response, requests.Response)
        return SendResult.sent(response.headers.get("Location", ""))

    @staticmethod
    def _error(error: WebPushException) -> SendResult:
        response = error.response
        if response is None:
            return SendResult.failed("webpush: refused before sending")
        status = response.status_code
        reason = f"webpush {status}"
        if status in {404, 410}:
            return SendResult.invalid_address(reason)
        if status == 429 or status >= 500:
            return SendResult.retry(reason, retry_after_seconds(response.headers.get("Retry-After")))
        return SendResult.failed(reason)
