from __future__ import annotations

from django import template

from apps.accounts.models import User
from apps.workspace.dashboard import dashboard_programs

register = template.Library()


@register.inclusion_tag("workspace/dashboard_link.html")
def dashboard_link(user: User) -> dict[str, object]:
    """The home page's link to the dashboard, for those who may open it."""
    return {"show": isinstance(user, User) and dashboard_programs(user).exists()}


@register.filter
def duration_text(seconds: float | None) -> str:
    """A duration for people: "—" when nothing was measured, else minutes and seconds."""
    if seconds is None:
        return "—"
    minutes, rest = divmod(round(seconds), 60)
    return f"{minutes} min {rest:02d} s" if minutes else f"{rest} s"
