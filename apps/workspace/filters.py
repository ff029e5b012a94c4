from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from django.contrib import admin
from django.db.models import QuerySet
from django.http import HttpRequest
from django.utils import timezone

from apps.accounts.models import User
from apps.sync import selectors as sync_selectors
from apps.sync.models import DismissCode
from apps.workspace import selectors

if TYPE_CHECKING:
    from django.contrib.admin.filters import _ListFilterChoices


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


class SetAsideFilter(admin.SimpleListFilter):
    """The kept changes that wait for review (without a choice), or those set aside: by a
    supervisor after review, or by the server, superseded by their device's later create of
    the record, which no supervisor may have read."""

    title = "set aside"
    parameter_name = "set_aside"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [(DismissCode.REVIEWED, "By a supervisor"), (DismissCode.SUPERSEDED, "Superseded by the device")]

    def choices(self, changelist: Any) -> Iterator[_ListFilterChoices]:
        every = super().choices(changelist)
        yield {**next(every), "display": "No: waiting for review"}  # what "All" shows here
        yield from every

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any]:
        value = self.value()
        code = DismissCode(value) if value in DismissCode.values else None
        return sync_selectors.quarantined_set_aside_as(queryset, code=code)
