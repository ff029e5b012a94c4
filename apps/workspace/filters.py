from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.db.models import QuerySet
from django.http import HttpRequest
from django.utils import timezone

from apps.accounts.models import User
from apps.workspace import selectors


class QueueFilter(admin.SimpleListFilter):
    """The home page's queues of this model, as a filter: the same condition as the count."""

    title = "queue"
    parameter_name = "queue"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [(queue.key, queue.label) for queue in selectors.queues_of(model_admin.model)]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any]:
        queue = selectors.QUEUES_BY_KEY.get(self.value() or "")
        if queue is None or queue.model is not queryset.model:
            return queryset
        assert isinstance(request.user, User)
        return queryset.filter(queue.condition(request.user, timezone.now()))
