from __future__ import annotations

from django.contrib.auth import authenticate
from django.http import Http404
from django.shortcuts import get_object_or_404
from drf_spectacular.utils import extend_schema
from rest_framework import exceptions, status
from rest_framework.permissions import AllowAny
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.throttling import AnonRateThrottle
from rest_framework.views import APIView

from apps.accounts import selectors, services
from apps.accounts.api.serializers import (
    DeviceRegisterInputSerializer,
    DeviceRevokeInputSerializer,
    DeviceSerializer,
    IssuedTokenSerializer,
    MeSerializer,
    ProgramDeviceSerializer,
)
from apps.accounts.authentication import token_failure
from apps.accounts.models import Device, DeviceToken, Program, User
from apps.common.api.pagination import PageQuerySerializer, StandardPagination, page_of, refuse_other_query_parameters
from apps.common.api.serializers import StrictSerializer


class LoginThrottle(AnonRateThrottle):
    scope = "login"


class InvalidCredentials(exceptions.APIException):
    status_code = status.HTTP_401_UNAUTHORIZED
    default_detail = "Wrong username or password."
    default_code = "invalid_credentials"


def _issued(device: Device, token: DeviceToken, raw_token: str) -> dict[str, object]:
    return {"device": device, "token": raw_token, "expires_at": token.expires_at}


class DeviceRegisterView(APIView):
    """Sign in on a phone or tablet: registers the device and returns its token (once)."""

    authentication_classes = []
    permission_classes = [AllowAny]
    throttle_classes = [LoginThrottle]

    @extend_schema(request=DeviceRegisterInputSerializer, responses={201: IssuedTokenSerializer})
    def post(self, request: Request) -> Response:
        payload = DeviceRegisterInputSerializer(data=request.data)
        payload.is_valid(raise_exception=True)
        data = payload.validated_data
        # While locked out, authenticate() returns None and django-axes answers 429.
        user = authenticate(request._request, username=data["username"], password=data["password"])
        if not isinstance(user, User):
            raise InvalidCredentials()
        device, token, raw_token = services.device_register(
            user=user, name=data["device_name"], platform=data["platform"]
        )
        return Response(IssuedTokenSerializer(_issued(device, token, raw_token)).data, status=status.HTTP_201_CREATED)


class TokenRotateView(APIView):
    """Exchange the current token for a new one. The old one works until the new one is first
    used, so a device that lost the answer rotates again; the token it never got then stops."""

    @extend_schema(request=None, responses={201: IssuedTokenSerializer})
    def post(self, request: Request) -> Response:
        assert isinstance(request.auth, DeviceToken)
        # No body (or JSON null) is no fields; any other body must be an object ([] or false
        # too: they are not "nothing", and ``or {}`` would have waved them through).
        StrictSerializer(data={} if request.data is None else request.data).is_valid(raise_exception=True)
        try:
            token, raw_token = services.device_token_rotate(token=request.auth)
        except selectors.TokenRejected as rejection:
            raise token_failure(rejection) from None
        return Response(
            IssuedTokenSerializer(_issued(token.device, token, raw_token)).data, status=status.HTTP_201_CREATED
        )


class MeView(APIView):
    @extend_schema(responses=MeSerializer)
    def get(self, request: Request) -> Response:
        assert isinstance(request.user, User)
        return Response(MeSerializer(request.user).data)


class DeviceListView(APIView):
    @extend_schema(responses=DeviceSerializer(many=True))
    def get(self, request: Request) -> Response:
        assert isinstance(request.user, User)
        return Response(DeviceSerializer(selectors.device_list(user=request.user), many=True).data)


class DeviceRevokeView(APIView):
    """Revoke one of your own devices (a lost tablet); its token and sockets die at once."""

    @extend_schema(request=DeviceRevokeInputSerializer, responses=DeviceSerializer)
    def post(self, request: Request, device_id: str) -> Response:
        assert isinstance(request.user, User)
        device = get_object_or_404(selectors.device_list(user=request.user), pk=device_id)
        payload = DeviceRevokeInputSerializer(data=request.data)
        payload.is_valid(raise_exception=True)
        device = services.device_revoke(device=device, revoked_by=request.user, reason=payload.validated_data["reason"])
        return Response(DeviceSerializer(device).data)


def _overseen_program(request: Request, slug: str) -> Program:
    """The program whose devices the requester oversees: 404 outside their programs, 403 for
    members who do not supervise it."""
    assert isinstance(request.user, User)
    program = selectors.program_of_member(user=request.user, slug=slug)
    if program is None:
        raise Http404("No such program.")
    if not selectors.may_oversee_devices(user=request.user, program=program):
        raise exceptions.PermissionDenied("Only the program's supervisors and administrators can do this.")
    return program


class ProgramDeviceListView(APIView):
    """Every device of the people working for the program (supervisors, administrators)."""

    @extend_schema(
        operation_id="programs_devices_list",
        parameters=[PageQuerySerializer],
        responses=page_of(ProgramDeviceSerializer),
    )
    def get(self, request: Request, program: str) -> Response:
        refuse_other_query_parameters(request)
        devices = selectors.program_device_list(program=_overseen_program(request, program))
        paginator = StandardPagination()
        page = paginator.paginate_queryset(devices, request, view=self) or []
        return paginator.get_paginated_response(ProgramDeviceSerializer(page, many=True).data)


class ProgramDeviceRevokeView(APIView):
    """Revoke a crew member's device (lost, stolen, left the program): its token stops working
    at once, its open websockets close within a second, and it is told to purge what it holds."""

    @extend_schema(request=DeviceRevokeInputSerializer, responses=ProgramDeviceSerializer)
    def post(self, request: Request, program: str, device_id: str) -> Response:
        assert isinstance(request.user, User)
        overseen = _overseen_program(request, program)
        device = get_object_or_404(selectors.program_device_list(program=overseen), pk=device_id)
        payload = DeviceRevokeInputSerializer(data=request.data)
        payload.is_valid(raise_exception=True)
        device = services.device_revoke(device=device, revoked_by=request.user, reason=payload.validated_data["reason"])
        return Response(ProgramDeviceSerializer(device).data)
