from __future__ import annotations

from django.apps import AppConfig


class DemoConfig(AppConfig):
    """Demo data built from the public NYC EMS sample; the top of the stack, it may use every app."""

    name = "apps.demo"
    label = "demo"
