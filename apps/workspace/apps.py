from __future__ import annotations

from django.apps import AppConfig


class WorkspaceConfig(AppConfig):
    """The case manager's and supervisor's workspace in the Django admin (sits on top of every app)."""

    name = "apps.workspace"
    label = "workspace"
    verbose_name = "Workspace"

    def ready(self) -> None:
        from django.contrib import admin

        from apps.workspace.views import install_dashboard_url

        install_dashboard_url(admin.site)
