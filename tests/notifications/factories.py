from __future__ import annotations

import factory

from apps.notifications.models import PushProvider, PushRegistration
from tests.accounts.factories import DeviceFactory


class PushRegistrationFactory(factory.django.DjangoModelFactory[PushRegistration]):
    class Meta:
        model = PushRegistration

    device = factory.SubFactory(DeviceFactory)
    provider = PushProvider.FCM
    token = factory.Sequence(lambda n: f"fcm-ok-{n:04d}")
