"""Firebase Cloud Messaging, HTTP v1 API, for Android devices.

    POST {FCM_ENDPOINT}/v1/projects/{project_id}/messages:send
    Authorization: Bearer <OAuth 2.0 access token, scope firebase.messaging>

The access token comes from the service account's key with the OAuth 2.0 JWT bearer grant
(RFC 7523) at the key's token_uri. Written on httpx and PyJWT rather than firebase-admin:
the same two requests, without firebase-admin's gRPC / Cloud dependencies, and with an
endpoint that can be pointed at a local stand-in.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass
from typing import Any

import httpx
import jwt
from django.core.exceptions import ImproperlyConfigured

from apps.notifications.channels.base import PUSH_TITLE, Message, PushTarget, SendResult, retry_after_seconds

SCOPE = "https://www.googleapis.com/auth/firebase.messaging"
JWT_BEARER_GRANT = "urn:ietf:params:oauth:grant-type:jwt-bearer"
FCM_ERROR_TYPE = "type.googleapis.com/google.firebase.fcm.v1.FcmError"
RESOURCE_INFO_TYPE = "type.googleapis.com/google.rpc.ResourceInfo"


@dataclass
class _AccessToken:
    value: str
    expires_at: float


_tokens: dict[str, _AccessToken] = {}
_tokens_lock = threading.Lock()


class FcmConfigurationError(ImproperlyConfigured):
    pass


class FcmBackend:
    def __init__(self, *, service_account: str, project_id: str, endpoint: str, timeout: float) -> None:
        if not service_account:
            raise FcmConfigurationError("Set FCM_SERVICE_ACCOUNT (or FCM_SERVICE_ACCOUNT_FILE) to send with FCM.")
        key = json.loads(service_account)
        self.client_email: str = key["client_email"]
        self.private_key: str = key["private_key"]
        self.private_key_id: str = key.get("private_key_id", "")
        self.token_uri: str = key.get("token_uri", "https://oauth2.googleapis.com/token")
        self.project_id = project_id or key["project_id"]
        self.endpoint = endpoint.rstrip("/")
        self.timeout = timeout

    def send(self, target: PushTarget, message: Message) -> SendResult:
        try:
            access_token = self._access_token()
            response = httpx.post(
                f"{self.endpoint}/v1/projects/{self.project_id}/messages:send",
                json=self.body(target, message),
                headers={"Authorization": f"Bearer {access_token}"},
                timeout=self.timeout,
            )
        except (httpx.HTTPError, OAuthError) as error:
            return SendResult.retry(f"fcm: {type(error).__name__}")
        if response.status_code == httpx.codes.OK:
            return SendResult.sent(str(response.json().get("name", "")))
        return self._error(response)

    @staticmethod
    def body(target: PushTarget, message: Message) -> dict[str, Any]:
        return {
            "message": {
                "token": target.token,
                "notification": {"title": PUSH_TITLE, "body": message.text},
                "data": message.data(),
                "android": {
                    "priority": "high" if message.is_urgent else "normal",
                    # A duplicate of the same notification replaces the first on the device.
                    "collapse_key": message.notification_id,
                    "notification": {"tag": message.notification_id},
                },
            }
        }

    def _error(self, response: httpx.Response) -> SendResult:
        try:
            error = response.json().get("error", {})
        except (ValueError, AttributeError):
            error = {}
        if not isinstance(error, dict):  # not Google's error shape: something else answered
            error = {}
        status = error.get("status", "")
        codes = [d.get("errorCode", "") for d in error.get("details", []) if d.get("@type") == FCM_ERROR_TYPE]
        code = codes[0] if codes else status
        reason = f"fcm {response.status_code} {code}".strip()
        text = str(error.get("message", ""))
        # A bare NOT_FOUND is the token's too (older answers carry no FCM error code); one that
        # names a resource (the project: FCM_PROJECT_ID mistyped), or a 404 that is not FCM's
        # (a wrong FCM_ENDPOINT), says nothing of the token and must not disable it.
        token_not_found = (
            response.status_code == httpx.codes.NOT_FOUND
            and status == "NOT_FOUND"
            and not any(d.get("@type") == RESOURCE_INFO_TYPE for d in error.get("details", []))
        )
        if code in {"UNREGISTERED", "SENDER_ID_MISMATCH"} or token_not_found:
            return SendResult.invalid_address(reason)
        if code == "INVALID_ARGUMENT" and "registration token" in text:
            return SendResult.invalid_address(reason)
        if response.status_code in {401, 403} and code in {"THIRD_PARTY_AUTH_ERROR", "UNAUTHENTICATED", ""}:
            _forget_token(self.client_email)
            return SendResult.retry(reason)
        if response.status_code == httpx.codes.TOO_MANY_REQUESTS or response.status_code >= 500:
            return SendResult.retry(reason, retry_after_seconds(response.headers.get("Retry-After")))
        return SendResult.failed(reason)

    def _access_token(self) -> str:
        with _tokens_lock:
            cached = _tokens.get(self.client_email)
            if cached and cached.expires_at > time.time() + 60:
                return cached.value
        now = int(time.time())
        assertion = jwt.encode(
            {"iss": self.client_email, "scope": SCOPE, "aud": self.token_uri, "iat": now, "exp": now + 3600},
            self.private_key,
            algorithm="RS256",
            headers={"kid": self.private_key_id} if self.private_key_id else None,
        )
        response = httpx.post(
            self.token_uri, data={"grant_type": JWT_BEARER_GRANT, "assertion": assertion}, timeout=self.timeout
        )
        if response.status_code != httpx.codes.OK:
            raise OAuthError(f"token endpoint answered {response.status_code}")
        grant = response.json()
        token = _AccessToken(str(grant["access_token"]), now + float(grant.get("expires_in", 3600)))
        with _tokens_lock:
            _tokens[self.client_email] = token
        return token.value


class OAuthError(Exception):
    pass


def _forget_token(client_email: str) -> None:
    with _tokens_lock:
        _tokens.pop(client_email, None)
