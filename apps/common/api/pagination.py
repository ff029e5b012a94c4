from __future__ import annotations

import functools
from typing import Any

from django.db.models import QuerySet
from rest_framework import serializers
from rest_framework.exceptions import NotFound
from rest_framework.pagination import PageNumberPagination
from rest_framework.request import Request

from apps.common.api.errors import DomainError
from apps.common.api.serializers import QuerySerializer


class StandardPagination(PageNumberPagination):
    """Pages by number. A ``page`` or ``page_size`` that is not a whole number from 1 is a
    400 naming it (DRF's own would serve the first page, or the default size, instead)."""

    page_size = 50
    page_size_query_param = "page_size"
    max_page_size = 200

    def get_page_size(self, request: Request) -> int:
        size = _counting_number(request, self.page_size_query_param)
        return self.page_size if size is None else min(size, self.max_page_size)

    def paginate_queryset(self, queryset: Any, request: Request, view: Any = None) -> list[Any] | None:
        _counting_number(request, self.page_query_param)
        try:
            return super().paginate_queryset(_totally_ordered(queryset), request, view)
        except NotFound as past_the_end:
            raise DomainError(
                "The list has fewer pages than that.",
                code="page_not_found",
                field=self.page_query_param,
                status_code=404,
            ) from past_the_end


def _totally_ordered(queryset: Any) -> Any:
    """Rows that tie on a list's order (incidents received the same second) come back in any
    order from one query to the next, so one page would repeat rows and the next skip them;
    the primary key breaks the tie."""
    if not isinstance(queryset, QuerySet):
        return queryset
    ordering = list(queryset.query.order_by or queryset.model._meta.ordering)
    if {"pk", "-pk", "id", "-id"} & {field for field in ordering if isinstance(field, str)}:
        return queryset
    return queryset.order_by(*ordering, "pk")


def _counting_number(request: Request, name: str) -> int | None:
    raw = request.query_params.get(name)
    if raw is None:
        return None
    try:
        number = int(raw) if raw.isascii() and raw.isdigit() else 0
    except ValueError:  # longer than Python reads as a number
        number = 0
    if number < 1:
        raise serializers.ValidationError({name: ["A whole number from 1."]}, code="invalid")
    return number


@functools.cache
def page_of(item_serializer: type[serializers.Serializer[object]]) -> type[serializers.Serializer[object]]:
    """The documented shape of a ``StandardPagination`` page of these items, for the
    ``responses`` of a view that pages by hand (one class per item type, so the schema names
    it once)."""
    name = item_serializer.__name__.removesuffix("Serializer")
    fields = {
        "count": serializers.IntegerField(),
        "next": serializers.URLField(allow_null=True),
        "previous": serializers.URLField(allow_null=True),
        "results": item_serializer(many=True),
    }
    return type(f"Paginated{name}ListSerializer", (serializers.Serializer,), fields)


class PageQuerySerializer(QuerySerializer):
    # Only their names: StandardPagination checks their values (one rule for every list).
    page = serializers.CharField(required=False, allow_blank=True)
    page_size = serializers.CharField(required=False, allow_blank=True)


def refuse_other_query_parameters(request: Request) -> None:
    """For a list that takes no query parameter but its page: anything else is a 400 naming
    it, so that a misspelt filter is not silently ignored."""
    PageQuerySerializer(data=request.query_params).is_valid(raise_exception=True)
