from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from pytest_django.fixtures import Settings as SettingsWrapper

from tests.notifications import keys
from tests.notifications.standins import (
    TWILIO_FROM,
    TWILIO_SID,
    TWILIO_TOKEN,
    ApnsStandIn,
    StandIn,
    running_apns_stand_in,
    running_stand_in,
)


@pytest.fixture(scope="session")
def http_stand_in() -> Iterator[StandIn]:
    with running_stand_in() as stand_in:
        yield stand_in


@pytest.fixture(scope="session")
def apns_stand_in(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ApnsStandIn]:
    with running_apns_stand_in(tmp_path_factory.mktemp("apns")) as stand_in:
        yield stand_in


def provider_settings(stand_in: StandIn, apns: ApnsStandIn) -> dict[str, str]:
    """Every provider adapter switched on and pointed at the local stand-ins (as env / settings)."""
    key = keys.apns_key()
    return {
        "NOTIFICATIONS_FCM_BACKEND": "fcm",
        "FCM_SERVICE_ACCOUNT": stand_in.fcm.json(stand_in.token_uri),
        "FCM_ENDPOINT": stand_in.url,
        "NOTIFICATIONS_APNS_BACKEND": "apns",
        "APNS_KEY": keys.pem_private(key.private_key),
        "APNS_KEY_ID": key.key_id,
        "APNS_TEAM_ID": key.team_id,
        "APNS_TOPIC": key.topic,
        "APNS_ENDPOINT": apns.url,
        "APNS_CA_FILE": str(apns.cert_file),
        "NOTIFICATIONS_WEBPUSH_BACKEND": "webpush",
        "VAPID_PRIVATE_KEY": keys.vapid_private_key_setting(),
        "VAPID_SUBJECT": "mailto:ops@example.org",
        "NOTIFICATIONS_SMS_BACKEND": "twilio",
        "TWILIO_ACCOUNT_SID": TWILIO_SID,
        "TWILIO_AUTH_TOKEN": TWILIO_TOKEN,
        "TWILIO_FROM_NUMBER": TWILIO_FROM,
        "TWILIO_API_BASE": stand_in.url,
    }


@pytest.fixture
def providers(
    settings: SettingsWrapper, http_stand_in: StandIn, apns_stand_in: ApnsStandIn, tmp_path: Path
) -> Iterator[tuple[StandIn, ApnsStandIn]]:
    """This process's adapters talk to the stand-ins; each test starts with empty request logs."""
    http_stand_in.reset()
    apns_stand_in.reset()
    for name, value in provider_settings(http_stand_in, apns_stand_in).items():
        setattr(settings, name, value)
    settings.NOTIFICATIONS_WEBPUSH_ALLOWED_HOSTS = ["127.0.0.1"]
    settings.NOTIFICATIONS_WEBPUSH_ALLOW_HTTP = True
    settings.NOTIFICATIONS_RETRY_BASE_SECONDS = 1
    yield http_stand_in, apns_stand_in
    assert http_stand_in.violations == []
    assert apns_stand_in.violations == []


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The payload scan runs after every other test, so it sees everything they produced."""
    scans = [item for item in items if "test_zz_payload_scan" in item.nodeid]
    items[:] = [item for item in items if item not in scans] + scans
