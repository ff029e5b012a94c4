"""Reads of the directory: the services a user's programs list, filtered as a referrer asks."""

from __future__ import annotations

import datetime as dt

from django.db.models import Prefetch, QuerySet

from apps.accounts.models import User
from apps.directory.models import OpeningHours, Service


def services_visible_to(*, user: User) -> QuerySet[Service]:
    """Every active service of a program the user works for (the directory is program-wide)."""
    program_ids = user.memberships.values_list("program_id", flat=True)
    return (
        Service.objects.filter(program_id__in=program_ids, is_active=True)
        .select_related("program")
        .prefetch_related("zones", Prefetch("hours", queryset=OpeningHours.objects.order_by("weekday", "opens_at")))
        .order_by("name", "pk")
    )


def service_search(
    *, user: User, service_type: str | None = None, zone_id: str | None = None, open_at: dt.datetime | None = None
) -> list[Service]:
    services = services_visible_to(user=user)
    if service_type:
        services = services.filter(service_type=service_type)
    if zone_id:
        services = services.filter(zones__id=zone_id).distinct()
    found = list(services)
    if open_at is not None:
        # Opening hours are wall-clock times of each service's program: decided in Python per
        # program time zone (a directory is hundreds of rows, not millions).
        found = [s for s in found if s.is_open_at(open_at, list(s.hours.all()), s.program.time_zone)]
    return found
