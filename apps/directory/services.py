"""Writes of the directory: a provider's capacity report."""

from __future__ import annotations

from django.db import transaction
from django.utils import timezone
from rest_framework import status

from apps.accounts.models import Role, User
from apps.common.api.errors import DomainError
from apps.directory.models import Service

# Who records what a provider reports: the program's case managers, supervisors and administrators.
CAPACITY_REPORTER_ROLES = frozenset({Role.CASE_MANAGER, Role.SUPERVISOR, Role.ADMINISTRATOR})


@transaction.atomic
def capacity_report(*, service: Service, reporter: User, available: int, total: int | None) -> Service:
    """Record the beds / slots a provider has free now (the real-time bed registry)."""
    if not reporter.memberships.filter(program_id=service.program_id, role__in=CAPACITY_REPORTER_ROLES).exists():
        raise DomainError(
            "Only case managers and supervisors report capacity.",
            code="permission_denied",
            status_code=status.HTTP_403_FORBIDDEN,
        )
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
