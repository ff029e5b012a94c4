"""Writes of the directory: a provider's capacity report."""

from __future__ import annotations

from django.db import transaction
from django.utils import timezone
from rest_framework import status

from apps.common.api.errors import DomainError
from apps.directory.models import Service


@transaction.atomic
def capacity_report(*, service: Service, available: int, total: int | None) -> Service:
    """Record the beds / slots a provider has free now (the real-time bed registry)."""
    if total is not None and available > total:
        raise DomainError(
            "Available capacity cannot exceed the total.",
            code="invalid",
            field="available",
            status_code=status.HTTP_400_BAD_REQUEST,
        )
    service = Service.objects.select_for_update().get(pk=service.pk)
    service.capacity_available = available
    if total is not None:
        service.capacity_total = total
    service.capacity_updated_at = timezone.now()
    service.save(update_fields=["capacity_available", "capacity_total", "capacity_updated_at", "updated_at"])
    return service
