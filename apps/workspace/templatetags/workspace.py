from __future__ import annotations

from django import template

from apps.accounts.models import User
from apps.workspace import selectors

register = template.Library()


@register.inclusion_tag("workspace/queues.html")
def workspace_queues(user: User) -> dict[str, object]:
    return {"queues": selectors.queue_counts(user=user) if isinstance(user, User) else []}
