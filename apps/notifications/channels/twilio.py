"""SMS through Twilio's Programmable Messaging REST API.

POST {TWILIO_API_BASE}/2010-04-01/Accounts/{AccountSid}/Messages.json
HTTP basic auth (AccountSid, AuthToken); form fields To, From | MessagingServiceSid, Body,
StatusCallback (Twilio then POSTs delivery reports there, signed with X-Twilio-Signature)
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Mapping

import httpx
from django.core.exceptions import ImproperlyConfigured

from apps.notifications.channels.base import Message, SendResult, retry_after_seconds


class TwilioConfigurationError(ImproperlyConfigured):
    pass


class TwilioSmsBackend:
    def __init__(
        self,
        *,
        account_sid: str,
        auth_token: str,
        from_number: str,
        messaging_service_sid: str,
        base_url: str,
        timeout: float,
        status_callback_url: str = "",
    ) -> None:
        if not (account_sid and auth_token and (from_number or messaging_service_sid)):
            raise TwilioConfigurationError(
                "Set TWILIO_ACCOUNT_SID, TWILIO_AUTH_TOKEN and TWILIO_FROM_NUMBER or TWILIO_MESSAGING_SERVICE_SID."
            )
        self.account_sid, self.auth_token = account_sid, auth_token
        self.from_number, self.messaging_service_sid = from_number, messaging_service_sid
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        self.status_callback_url = status_callback_url

    def send(self, address: str, message: Message) -> SendResult:
        form = {"To": address, "Body": message.sms_body()}
        if self.messaging_service_sid:
            form["MessagingServiceSid"] = self.messaging_service_sid
        else:
            form["From"] = self.from_number
        if self.status_callback_url:
            form["StatusCallback"] = self.status_callback_url
        try:
            response = httpx.post(
                f"{self.base_url}/2010-04-01/Accounts/{self.account_sid}/Messages.json",
                data=form,
                auth=(self.account_sid, self.auth_token),
                timeout=self.timeout,
            )
        except httpx.HTTPError as error:
            return SendResult.retry(f"twilio: {type(error).__name__}")
        if response.status_code in {200, 201}:
            return SendResult.sent(str(response.json().get("sid", "")))
        try:
            code = response.json().get("code", "")
        except ValueError:
            code = ""
        reason = f"twilio {response.status_code} {code}".strip()
        if response.status_code == httpx.codes.TOO_MANY_REQUESTS or response.status_code >= 500:
            return SendResult.retry(reason, retry_after_seconds(response.headers.get("Retry-After")))
        return SendResult.failed(reason)


def request_signature(*, auth_token: str, url: str, params: Mapping[str, str]) -> str:
    """Twilio's X-Twilio-Signature: HMAC-SHA1 of the URL followed by each POST name and value,
    sorted by name, keyed with the auth token, base64-encoded."""
    payload = url + "".join(f"{name}{params[name]}" for name in sorted(params))
    digest = hmac.new(auth_token.encode(), payload.encode(), hashlib.sha1).digest()
    return base64.b64encode(digest).decode()


def signature_is_valid(*, auth_token: str, url: str, params: Mapping[str, str], signature: str) -> bool:
    if not auth_token or not url or not signature:
        return False
    expected = request_signature(auth_token=auth_token, url=url, params=params)
    # As bytes: compare_digest refuses str with non-ASCII characters, and a forged header may have them.
    return hmac.compare_digest(expected.encode(), signature.encode())
