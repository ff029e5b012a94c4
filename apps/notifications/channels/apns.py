"""Apple Push Notification service over HTTP/2 with a token-based provider key (.p8).

    POST {APNS_ENDPOINT}/3/device/<device token>      (HTTP/2 only)
    authorization: bearer <ES256 JWT: header {alg, kid}, claims {iss: team id, iat}>
    apns-topic: <bundle id>   apns-push-type: alert   apns-priority: 10 | 5

Apple asks that a provider token be reused for at least 20 minutes and renewed within the
hour, so one token is kept per process for 40 minutes. One HTTP/2 connection is kept per
process too: APNs treats frequent reconnects as a denial-of-service attempt.
"""

from __future__ import annotations

import logging
import ssl
import threading
import time
from typing import Any

import httpx
import jwt
from django.core.exceptions import ImproperlyConfigured

from apps.notifications.channels.base import PUSH_TITLE, Message, PushTarget, SendResult, retry_after_seconds

logger = logging.getLogger(__name__)

TOKEN_LIFETIME_SECONDS = 40 * 60
INVALID_TOKEN_REASONS = {"BadDeviceToken", "Unregistered"}
# Also what every token gets when APNS_TOPIC names another of the team's apps: a failed
# send (the fallback chain goes on), not a token to switch off, or one wrong setting would
# disable every iOS registration until each device registered again.
TOKEN_NOT_FOR_TOPIC = "DeviceTokenNotForTopic"  # noqa: S105 — an APNs reason code
STALE_PROVIDER_TOKEN_REASONS = {"ExpiredProviderToken", "InvalidProviderToken"}

_lock = threading.Lock()
_provider_tokens: dict[tuple[str, str], tuple[str, float]] = {}
_clients: dict[tuple[str, str], httpx.Client] = {}


class ApnsConfigurationError(ImproperlyConfigured):
    pass


class ApnsBackend:
    def __init__(
        self, *, key: str, key_id: str, team_id: str, topic: str, endpoint: str, ca_file: str, timeout: float
    ) -> None:
        if not (key and key_id and team_id and topic):
            raise ApnsConfigurationError("Set APNS_KEY (or APNS_KEY_FILE), APNS_KEY_ID, APNS_TEAM_ID and APNS_TOPIC.")
        self.key, self.key_id, self.team_id, self.topic = key, key_id, team_id, topic
        self.endpoint = endpoint.rstrip("/")
        self.ca_file = ca_file
        self.timeout = timeout

    def send(self, target: PushTarget, message: Message) -> SendResult:
        try:
            response = self._client().post(
                f"{self.endpoint}/3/device/{target.token}",
                json=self.body(message),
                headers=self.headers(message),
            )
        except httpx.HTTPError as error:
            self._drop_client()
            return SendResult.retry(f"apns: {type(error).__name__}")
        if response.status_code == httpx.codes.OK:
            return SendResult.sent(response.headers.get("apns-id", ""))
        return self._error(response)

    def headers(self, message: Message) -> dict[str, str]:
        return {
            "authorization": f"bearer {self._provider_token()}",
            "apns-topic": self.topic,
            "apns-push-type": "alert",
            "apns-priority": "10" if message.is_urgent else "5",
            "apns-expiration": str(int(time.time()) + 3600),
            "apns-id": message.attempt_id,
            # A duplicate of the same notification replaces the first on the device.
            "apns-collapse-id": message.notification_id,
        }

    @staticmethod
    def body(message: Message) -> dict[str, Any]:
        aps: dict[str, Any] = {"alert": {"title": PUSH_TITLE, "body": message.text}, "sound": "default"}
        if message.is_urgent:
            aps["interruption-level"] = "time-sensitive"
        return {"aps": aps, **message.data()}

    def _error(self, response: httpx.Response) -> SendResult:
        try:
            reason_code = str(response.json().get("reason", ""))
        except ValueError:
            reason_code = ""
        reason = f"apns {response.status_code} {reason_code}".strip()
        if response.status_code == httpx.codes.GONE or reason_code in INVALID_TOKEN_REASONS:
            return SendResult.invalid_address(reason)
        if reason_code == TOKEN_NOT_FOR_TOPIC:
            logger.warning("APNs refused a token for the topic %s: check APNS_TOPIC", self.topic)
            return SendResult.failed(reason)
        if reason_code in STALE_PROVIDER_TOKEN_REASONS:
            with _lock:
                _provider_tokens.pop((self.team_id, self.key_id), None)
            return SendResult.retry(reason)
        if response.status_code == httpx.codes.TOO_MANY_REQUESTS or response.status_code >= 500:
            return SendResult.retry(reason, retry_after_seconds(response.headers.get("retry-after")))
        return SendResult.failed(reason)

    def _provider_token(self) -> str:
        cache_key = (self.team_id, self.key_id)
        with _lock:
            cached = _provider_tokens.get(cache_key)
            if cached and cached[1] > time.time():
                return cached[0]
            issued_at = int(time.time())
            token = jwt.encode(
                {"iss": self.team_id, "iat": issued_at}, self.key, algorithm="ES256", headers={"kid": self.key_id}
            )
            _provider_tokens[cache_key] = (token, issued_at + TOKEN_LIFETIME_SECONDS)
            return token

    def _client(self) -> httpx.Client:
        cache_key = (self.endpoint, self.ca_file)
        with _lock:
            client = _clients.get(cache_key)
            if client is None:
                verify: ssl.SSLContext | bool = (
                    ssl.create_default_context(cafile=self.ca_file) if self.ca_file else True
                )
                client = httpx.Client(http1=False, http2=True, verify=verify, timeout=self.timeout)
                _clients[cache_key] = client
            return client

    def _drop_client(self) -> None:
        with _lock:
            client = _clients.pop((self.endpoint, self.ca_file), None)
        if client is not None:
            client.close()
