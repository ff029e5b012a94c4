from __future__ import annotations

from django.shortcuts import get_object_or_404
from django.utils import timezone
from drf_spectacular.utils import extend_schema
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from apps.accounts.models import User
from apps.common.api.pagination import StandardPagination, page_of
from apps.directory import selectors, services
from apps.directory.api.serializers import CapacitySerializer, ServiceSearchSerializer, ServiceSerializer
from apps.directory.models import Service


def _user(request: Request) -> User:
    assert isinstance(request.user, User)
    return request.user


class ServiceListView(APIView):
    """Search the directory: ?type=detox&zone=<id>&open_now=true (open now in the program's time zone)."""

    @extend_schema(
        parameters=[ServiceSearchSerializer],
        operation_id="directory_services_list",
        responses=page_of(ServiceSerializer),
    )
    def get(self, request: Request) -> Response:
        query = ServiceSearchSerializer(data=request.query_params)
        query.is_valid(raise_exception=True)
        now = timezone.now()
        found = selectors.service_search(
            user=_user(request),
            service_type=query.validated_data.get("type"),
            zone_id=query.validated_data.get("zone"),
            open_at=now if query.validated_data["open_now"] else None,
        )
        paginator = StandardPagination()
        page: list[Service] | None = paginator.paginate_queryset(found, request, view=self)
        data = ServiceSerializer(page, many=True, context={"now": now}).data
        return paginator.get_paginated_response(data)


class ServiceDetailView(APIView):
    @extend_schema(responses=ServiceSerializer)
    def get(self, request: Request, service_id: str) -> Response:
        service = get_object_or_404(selectors.services_visible_to(user=_user(request)), pk=service_id)
        return Response(ServiceSerializer(service, context={"now": timezone.now()}).data)


class CapacityView(APIView):
    """A case manager or supervisor records the beds / slots a provider reports free now."""

    @extend_schema(request=CapacitySerializer, responses=ServiceSerializer)
    def post(self, request: Request, service_id: str) -> Response:
        user = _user(request)
        service = get_object_or_404(selectors.services_visible_to(user=user), pk=service_id)
        payload = CapacitySerializer(data=request.data)
        payload.is_valid(raise_exception=True)
        services.capacity_report(
            service=service,
            reporter=user,
            available=payload.validated_data["available"],
            total=payload.validated_data["total"],
        )
        service = selectors.services_visible_to(user=user).get(pk=service.pk)
        return Response(ServiceSerializer(service, context={"now": timezone.now()}).data)
