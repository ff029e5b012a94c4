from __future__ import annotations

from typing import Any

from django.conf import settings
from django.db import models
from django.utils import timezone

from apps.accounts.models import Program
from apps.common.models import TimeStampedModel


class ResponseModel(models.TextChoices):
    CO_RESPONSE = "co_response", "Co-response (officer + clinician)"
    EMT_CLINICIAN = "emt_clinician", "EMT + mental-health clinician"
    COMMUNITY_RESPONSE = "community_response", "Community response"
    MOBILE_TREATMENT = "mobile_treatment", "Mobile treatment unit"


class UnitStatus(models.TextChoices):
    AVAILABLE = "available", "Available"
    ASSIGNED = "assigned", "Assigned"
    EN_ROUTE = "en_route", "En route"
    ON_SCENE = "on_scene", "On scene"
    TRANSPORTING = "transporting", "Transporting"
    OUT_OF_SERVICE = "out_of_service", "Out of service"


class Zone(TimeStampedModel):
    """A neighbourhood or precinct that units cover."""

    program = models.ForeignKey(Program, on_delete=models.CASCADE, related_name="zones")
    code = models.CharField(max_length=32)
    name = models.CharField(max_length=200)
    borough = models.CharField(max_length=64, blank=True)
    latitude = models.DecimalField(max_digits=9, decimal_places=6, null=True, blank=True)
    longitude = models.DecimalField(max_digits=9, decimal_places=6, null=True, blank=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["program", "code"], name="zone_unique_code")]

    def __str__(self) -> str:
        return self.name


class Unit(TimeStampedModel):
    """A response team of one response model."""

    program = models.ForeignKey(Program, on_delete=models.CASCADE, related_name="units")
    call_sign = models.CharField(max_length=32)
    response_model = models.CharField(max_length=32, choices=ResponseModel.choices)
    home_zone = models.ForeignKey(Zone, null=True, blank=True, on_delete=models.SET_NULL, related_name="units")
    status = models.CharField(max_length=32, choices=UnitStatus.choices, default=UnitStatus.OUT_OF_SERVICE)
    status_changed_at = models.DateTimeField(default=timezone.now)
    latitude = models.DecimalField(max_digits=9, decimal_places=6, null=True, blank=True)
    longitude = models.DecimalField(max_digits=9, decimal_places=6, null=True, blank=True)
    members: models.ManyToManyField[Any, Any] = models.ManyToManyField(
        settings.AUTH_USER_MODEL, through="UnitMember", related_name="units"
    )

    class Meta:
        constraints = [models.UniqueConstraint(fields=["program", "call_sign"], name="unit_unique_call_sign")]

    def __str__(self) -> str:
        return self.call_sign

    def time_in_status(self) -> float:
        return (timezone.now() - self.status_changed_at).total_seconds()


class UnitMember(TimeStampedModel):
    unit = models.ForeignKey(Unit, on_delete=models.CASCADE, related_name="memberships")
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="unit_memberships")
    is_on_shift = models.BooleanField(default=False)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["unit", "user"], name="unit_member_unique")]

    def __str__(self) -> str:
        return f"{self.user} in {self.unit}"
