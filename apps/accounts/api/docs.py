"""The API's description: its OpenAPI schema and the docs page that shows it.

A health-information system's map of its own API is for those who use it: in production
only a signed-in device, or staff signed in to the admin (its browser opens the docs page),
may read it; development publishes it (``API_SCHEMA_PUBLIC``). Either way each address
reads it a limited number of times a minute (``THROTTLE_SCHEMA_RATE``).
"""

from __future__ import annotations

from collections.abc import Sequence

from django.conf import settings
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerSplitView
from rest_framework.permissions import AllowAny, BasePermission, IsAuthenticated
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from apps.accounts.authentication import DeviceTokenAuthentication, StaffSessionAuthentication
from apps.accounts.throttling import DeviceRateThrottle, SchemaThrottle
from apps.common.api.renderers import JSONRenderer


class DescriptionAccess(APIView):
    """Who may read the description, and how often; its two views below."""

    authentication_classes = [DeviceTokenAuthentication, StaffSessionAuthentication]
    throttle_classes = [SchemaThrottle, DeviceRateThrottle]

    def get_permissions(self) -> Sequence[BasePermission]:
        # Read per request, so that a test (or a deployment's settings) decides it.
        return [AllowAny()] if settings.API_SCHEMA_PUBLIC else [IsAuthenticated()]

    def finalize_response(self, request: Request, response: Response, *args: object, **kwargs: object) -> Response:
        # A refusal answers in the API's one error shape, not in YAML or as the docs page.
        if getattr(response, "exception", False):
            request.accepted_renderer = JSONRenderer()
            request.accepted_media_type = "application/json"
        return super().finalize_response(request, response, *args, **kwargs)


class SchemaView(DescriptionAccess, SpectacularAPIView):
    pass


class DocsView(DescriptionAccess, SpectacularSwaggerSplitView):
    pass
