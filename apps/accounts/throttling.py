from __future__ import annotations

from typing import TYPE_CHECKING

from rest_framework.request import Request
from rest_framework.throttling import SimpleRateThrottle

from apps.accounts.models import DeviceToken

if TYPE_CHECKING:  # rest_framework.views imports this module through the settings
    from rest_framework.views import APIView


class DeviceRateThrottle(SimpleRateThrottle):
    """Requests per device, so one misbehaving tablet cannot crowd out its crew."""

    scope = "device"

    def get_cache_key(self, request: Request, view: APIView) -> str | None:
        if not isinstance(request.auth, DeviceToken):
            return None  # unauthenticated requests have their own throttles
        return self.cache_format % {"scope": self.scope, "ident": request.auth.device_id}
