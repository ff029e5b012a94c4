from __future__ import annotations

from typing import Any

from django.db.models import QuerySet
from rest_framework import generics
from rest_framework.request import Request
from rest_framework.response import Response

from apps.accounts.models import User
from apps.common.api.pagination import refuse_other_query_parameters
from apps.teams import selectors
from apps.teams.api.serializers import UnitSerializer, ZoneSerializer
from apps.teams.models import Unit, Zone


class UnitListView(generics.ListAPIView[Unit]):
    serializer_class = UnitSerializer

    def list(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        refuse_other_query_parameters(request)
        return super().list(request, *args, **kwargs)

    def get_queryset(self) -> QuerySet[Unit]:
        assert isinstance(self.request.user, User)
        return selectors.units_visible_to(user=self.request.user)


class UnitDetailView(generics.RetrieveAPIView[Unit]):
    serializer_class = UnitSerializer
    lookup_url_kwarg = "unit_id"

    def get_queryset(self) -> QuerySet[Unit]:
        assert isinstance(self.request.user, User)
        return selectors.units_visible_to(user=self.request.user)


class ZoneListView(generics.ListAPIView[Zone]):
    serializer_class = ZoneSerializer

    def list(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        refuse_other_query_parameters(request)
        return super().list(request, *args, **kwargs)

    def get_queryset(self) -> QuerySet[Zone]:
        assert isinstance(self.request.user, User)
        return selectors.zones_visible_to(user=self.request.user)
