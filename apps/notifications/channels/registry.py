"""Which adapter serves each channel, from settings; built per send so settings changes apply."""

from __future__ import annotations

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

from apps.notifications.channels.apns import ApnsBackend
from apps.notifications.channels.base import AddressBackend, PushBackend
from apps.notifications.channels.email import DjangoEmailBackend
from apps.notifications.channels.fcm import FcmBackend
from apps.notifications.channels.outbox import (
    ConsoleAddressBackend,
    ConsolePushBackend,
    OutboxEmailBackend,
    OutboxPushBackend,
    OutboxSmsBackend,
)
from apps.notifications.channels.twilio import TwilioSmsBackend
from apps.notifications.channels.webpush import WebPushBackend


def _unknown(setting: str, value: str) -> ImproperlyConfigured:
    return ImproperlyConfigured(f"{setting}={value!r} is not a known backend.")


def push_backend(provider: str) -> PushBackend:
    timeout = float(settings.NOTIFICATIONS_HTTP_TIMEOUT_SECONDS)
    setting = f"NOTIFICATIONS_{provider.upper()}_BACKEND"
    name = getattr(settings, setting)
    if name == "outbox":
        return OutboxPushBackend()
    if name == "console":
        return ConsolePushBackend()
    if provider == "fcm" and name == "fcm":
        return FcmBackend(
            service_account=settings.FCM_SERVICE_ACCOUNT,
            project_id=settings.FCM_PROJECT_ID,
            endpoint=settings.FCM_ENDPOINT,
            timeout=timeout,
        )
    if provider == "apns" and name == "apns":
        return ApnsBackend(
            key=settings.APNS_KEY,
            key_id=settings.APNS_KEY_ID,
            team_id=settings.APNS_TEAM_ID,
            topic=settings.APNS_TOPIC,
            endpoint=settings.APNS_ENDPOINT,
            ca_file=settings.APNS_CA_FILE,
            timeout=timeout,
        )
    if provider == "webpush" and name == "webpush":
        return WebPushBackend(private_key=settings.VAPID_PRIVATE_KEY, subject=settings.VAPID_SUBJECT, timeout=timeout)
    raise _unknown(setting, name)


def sms_backend() -> AddressBackend:
    name = settings.NOTIFICATIONS_SMS_BACKEND
    if name == "outbox":
        return OutboxSmsBackend()
    if name == "console":
        return ConsoleAddressBackend("sms")
    if name == "twilio":
        return TwilioSmsBackend(
            account_sid=settings.TWILIO_ACCOUNT_SID,
            auth_token=settings.TWILIO_AUTH_TOKEN,
            from_number=settings.TWILIO_FROM_NUMBER,
            messaging_service_sid=settings.TWILIO_MESSAGING_SERVICE_SID,
            base_url=settings.TWILIO_API_BASE,
            timeout=float(settings.NOTIFICATIONS_HTTP_TIMEOUT_SECONDS),
            status_callback_url=settings.TWILIO_STATUS_CALLBACK_URL,
        )
    raise _unknown("NOTIFICATIONS_SMS_BACKEND", name)


def email_backend() -> AddressBackend:
    name = settings.NOTIFICATIONS_EMAIL_BACKEND
    if name == "outbox":
        return OutboxEmailBackend()
    if name == "console":
        return ConsoleAddressBackend("email")
    if name == "django":
        return DjangoEmailBackend()
    raise _unknown("NOTIFICATIONS_EMAIL_BACKEND", name)
