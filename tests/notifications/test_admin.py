from __future__ import annotations

from django.test import Client

from apps.accounts.models import Program
from apps.notifications import services
from apps.notifications.models import NotificationAttempt, Urgency
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
