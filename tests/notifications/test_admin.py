from __future__ import annotations

import pytest
from django.test import Client

from apps.accounts.models import Program
from apps.common.api.errors import DomainError
from apps.notifications import services
from apps.notifications.models import NotificationAttempt, NotificationPreference, Urgency
from tests.conftest import CrewMember
from tests.notifications.factories import PushRegistrationFactory


def test_supervisor_reads_a_notifications_delivery_in_the_admin_but_cannot_change_it(
    superuser_client: Client, program: Program, crew_member: CrewMember
) -> None:
    client = superuser_client
    PushRegistrationFactory.create(device=crew_member.device, token="fcm-secret-token-value")
    notification = services.notify(
        program=program, recipients=[crew_member.user.pk], kind="assignment.offered", urgency=Urgency.URGENT, text="New"
    )

    listing = client.get("/admin/notifications/notification/")
    detail = client.get(f"/admin/notifications/notification/{notification.pk}/change/")
    registrations = client.get("/admin/notifications/pushregistration/")
    refused = client.post(f"/admin/notifications/notification/{notification.pk}/delete/", {"post": "yes"})

    assert listing.status_code == detail.status_code == registrations.status_code == 200
    assert "delivered to 0 of 1 devices" in listing.content.decode()
    assert "fcm-secret-token-value" not in registrations.content.decode()
    assert refused.status_code == 403
    assert NotificationAttempt.objects.filter(notification=notification).count() == 2


@pytest.mark.django_db
def test_a_preference_with_a_time_zone_that_does_not_exist_is_refused_naming_it(superuser_client: Client) -> None:
    """Every send that reads such a preference would raise, taking its whole chunk of reminders down with it."""
    response = superuser_client.post(
        "/admin/notifications/notificationpreference/add/",
        {
            "phone_number": "+12125550145",
            "sms_allowed": "on",
            "quiet_hours_start": "21:00",
            "quiet_hours_end": "08:00",
            "time_zone": "America/NewYork",
        },
    )

    assert response.status_code == 200  # the form again, with its error
    assert "time_zone" in response.context["adminform"].form.errors
    assert not NotificationPreference.objects.exists()
    with pytest.raises(DomainError) as refused:
        services.preference_set(phone_number="+12125550145", quiet_hours=("21:00", "08:00"), time_zone="Mars/Olympus")
    assert refused.value.field == "time_zone"
