"""Replies to our SMS through Twilio's inbound webhook: STOP opts the number out, START back in."""

from __future__ import annotations

import uuid
from urllib.parse import urlencode

import pytest
from pytest_django.fixtures import Settings as SettingsWrapper
from rest_framework.test import APIClient

from apps.notifications.channels.twilio import request_signature
from apps.notifications.models import NotificationPreference

pytestmark = pytest.mark.django_db

INBOUND_URL = "https://tandem.example.org/api/v1/notifications/sms/twilio-inbound/"
NUMBER = "+12125550142"


def _reply(settings: SettingsWrapper, body: str, signature: str | None = None) -> int:
    settings.TWILIO_AUTH_TOKEN = "standin-auth-token"
    settings.TWILIO_INBOUND_URL = INBOUND_URL
    params = {"From": NUMBER, "Body": body, "MessageSid": f"SM{uuid.uuid4().hex}"}  # each reply a message of its own
    signed = signature or request_signature(auth_token="standin-auth-token", url=INBOUND_URL, params=params)
    response = APIClient().post(
        "/api/v1/notifications/sms/twilio-inbound/",
        urlencode(params),
        content_type="application/x-www-form-urlencoded",
        HTTP_X_TWILIO_SIGNATURE=signed,
    )
    return response.status_code


def test_stop_opts_out_and_start_opts_back_in(settings: SettingsWrapper) -> None:
    assert _reply(settings, "Stop") == 204
    assert NotificationPreference.objects.get(phone_number=NUMBER).allows("sms") is False

    assert _reply(settings, "hello?") == 204  # anything else changes nothing
    assert NotificationPreference.objects.get(phone_number=NUMBER).allows("sms") is False

    assert _reply(settings, "START") == 204
    assert NotificationPreference.objects.get(phone_number=NUMBER).allows("sms") is True


def test_an_unsigned_reply_is_refused_and_changes_nothing(settings: SettingsWrapper) -> None:
    assert _reply(settings, "STOP", signature="forged") == 403
    assert not NotificationPreference.objects.exists()


@pytest.mark.parametrize("body", ["REVOKE", " optout ", "Revoke\n"])
def test_every_opt_out_keyword_twilio_honours_opts_out(settings: SettingsWrapper, body: str) -> None:
    """Twilio blocks the number on these words; a later text must not be tried either."""
    assert _reply(settings, body) == 204
    assert NotificationPreference.objects.get(phone_number=NUMBER).allows("sms") is False


def test_a_keyword_twilio_classified_as_opt_out_opts_out_in_any_language(settings: SettingsWrapper) -> None:
    """With Advanced Opt-Out, Twilio says what a reply was (OptOutType), whatever word or language."""
    settings.TWILIO_AUTH_TOKEN = "standin-auth-token"
    settings.TWILIO_INBOUND_URL = INBOUND_URL
    client = APIClient()
    for body, opt_out_type, allowed in [("ARRET", "STOP", False), ("ALTO", "STOP", False), ("Oui", "START", True)]:
        params = {"From": NUMBER, "Body": body, "MessageSid": f"SM-{body}", "OptOutType": opt_out_type}
        response = client.post(
            "/api/v1/notifications/sms/twilio-inbound/",
            urlencode(params),
            content_type="application/x-www-form-urlencoded",
            HTTP_X_TWILIO_SIGNATURE=request_signature(auth_token="standin-auth-token", url=INBOUND_URL, params=params),
        )
        assert response.status_code == 204
        assert NotificationPreference.objects.get(phone_number=NUMBER).allows("sms") is allowed, body


def test_a_signature_that_is_not_ascii_is_refused_not_a_500(settings: SettingsWrapper) -> None:
    assert _reply(settings, "STOP", signature="é") == 403
    assert not NotificationPreference.objects.exists()


def test_a_replayed_reply_changes_nothing(settings: SettingsWrapper) -> None:
    """Twilio's signature has no time in it: a captured START sent again after the person's
    STOP must not opt them back in. Each message (MessageSid) counts once."""
    settings.TWILIO_AUTH_TOKEN = "standin-auth-token"
    settings.TWILIO_INBOUND_URL = INBOUND_URL
    client = APIClient()

    def post(body: str, sid: str) -> int:
        params = {"From": NUMBER, "Body": body, "MessageSid": sid}
        return client.post(
            "/api/v1/notifications/sms/twilio-inbound/",
            urlencode(params),
            content_type="application/x-www-form-urlencoded",
            HTTP_X_TWILIO_SIGNATURE=request_signature(auth_token="standin-auth-token", url=INBOUND_URL, params=params),
        ).status_code

    assert post("START", "SM-start") == 204
    assert post("STOP", "SM-stop") == 204
    assert post("START", "SM-start") == 204  # replayed: answered as before, so Twilio does not retry

    assert NotificationPreference.objects.get(phone_number=NUMBER).allows("sms") is False
