"""The service directory: where a person can be referred, when it is open, and what room it has.

Not health information: a directory entry describes a provider, never a person.
"""

from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo

from django.contrib.postgres.fields import ArrayField
from django.db import models

from apps.accounts.models import Program
from apps.common.models import TimeStampedModel
from apps.teams.models import Zone


class ServiceType(models.TextChoices):
    CRISIS_STABILISATION = "crisis_stabilisation", "Crisis stabilisation"
    OUTPATIENT_MENTAL_HEALTH = "outpatient_mental_health", "Outpatient mental health"
    SUBSTANCE_USE = "substance_use", "Substance-use treatment"
    DETOX = "detox", "Detox / withdrawal management"
    HOUSING = "housing", "Housing / shelter"
    PRIMARY_CARE = "primary_care", "Primary care"
    PEER_SUPPORT = "peer_support", "Peer support"


class Service(TimeStampedModel):
    """A provider's service that a program refers people to."""

    program = models.ForeignKey(Program, on_delete=models.CASCADE, related_name="+")
    name = models.CharField(max_length=200)
    service_type = models.CharField(max_length=32, choices=ServiceType.choices)
    zones = models.ManyToManyField(Zone, blank=True, related_name="+", help_text="Zones the service takes people from.")
    address = models.CharField(max_length=300, blank=True)
    phone_number = models.CharField(max_length=32, blank=True)
    email = models.EmailField(blank=True)
    eligibility_notes = models.TextField(blank=True)
    languages = ArrayField(models.CharField(max_length=16), default=list, blank=True, help_text="BCP 47 tags.")
    is_open_all_hours = models.BooleanField(default=False)
    # Reported by the provider (the bed / slot registry); null when it does not report.
    capacity_available = models.PositiveIntegerField(null=True, blank=True)
    capacity_total = models.PositiveIntegerField(null=True, blank=True)
    capacity_updated_at = models.DateTimeField(null=True, blank=True)
    is_active = models.BooleanField(default=True)

    class Meta:
        indexes = [models.Index(fields=["program", "service_type"], name="directory_service_type")]

    def __str__(self) -> str:
        return self.name

    def is_open_at(self, moment: dt.datetime, hours: list[OpeningHours], time_zone: str) -> bool:
        """Open at ``moment``, read on the wall clock of the program's time zone."""
        if self.is_open_all_hours:
            return True
        local = moment.astimezone(ZoneInfo(time_zone))
        weekday, now = local.weekday(), local.time()
        yesterday = (weekday - 1) % 7
        for period in hours:
            overnight = period.closes_at <= period.opens_at
            if period.weekday == weekday and (
                period.opens_at <= now < period.closes_at if not overnight else now >= period.opens_at
            ):
                return True
            if overnight and period.weekday == yesterday and now < period.closes_at:
                return True
        return False


class OpeningHours(models.Model):
    """One opening period on a weekday, in local time; closing at or before opening means overnight."""

    service = models.ForeignKey(Service, on_delete=models.CASCADE, related_name="hours")
    weekday = models.PositiveSmallIntegerField(help_text="0 = Monday … 6 = Sunday.")
    opens_at = models.TimeField()
    closes_at = models.TimeField()

    class Meta:
        ordering = ["weekday", "opens_at"]
        constraints = [models.CheckConstraint(condition=models.Q(weekday__lte=6), name="opening_hours_weekday")]

    def __str__(self) -> str:
        return f"{self.weekday} {self.opens_at}-{self.closes_at}"
