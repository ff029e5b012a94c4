from __future__ import annotations

import functools
from typing import Any

from rest_framework import serializers
from rest_framework.pagination import PageNumberPagination
from rest_framework.request import Request

from apps.common.api.serializers import StrictSerializer


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
        return super().paginate_queryset(queryset, request, view)


def _counting_number(request: Request, name: str) -> int | None:
    raw = request.query_params.get(name)
    if raw is None:
        return None
    if not (raw.isascii() and raw.isdigit() and 0 < len(raw) <= 9 and int(raw) >= 1):
        raise serializers.ValidationError({name: ["A whole number from 1."]}, code="invalid")
    return int(raw)


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


class PageQuerySerializer(StrictSerializer):
    # Only their names: StandardPagination checks their values (one rule for every list).
    page = serializers.CharField(required=False, allow_blank=True)
    page_size = serializers.CharField(required=False, allow_blank=True)


def refuse_other_query_parameters(request: Request) -> None:
    """For a list that takes no query parameter but its page: anything else is a 400 naming
    it, so that a misspelt filter is not silently ignored."""
    PageQuerySerializer(data=request.query_params.dict()).is_valid(raise_exception=True)
