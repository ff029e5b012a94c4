from __future__ import annotations

from functools import cache
from typing import TYPE_CHECKING

import redis
from django.conf import settings
from rest_framework.request import Request
from rest_framework.throttling import SimpleRateThrottle

from apps.accounts.models import DeviceToken
from apps.common.cache import ProcessConnectionPool

if TYPE_CHECKING:  # rest_framework.views imports this module through the settings
    from rest_framework.views import APIView


@cache
def _counters() -> redis.Redis:
    return redis.Redis(connection_pool=ProcessConnectionPool.from_url(settings.REDIS_URL))


class DeviceRateThrottle(SimpleRateThrottle):
    """Requests per device, so one misbehaving tablet cannot crowd out its crew.

    Counted in fixed windows of the rate's period, with one atomic round trip to Redis per
    request (INCR and EXPIRE). DRF's own throttle keeps the time of every request in a cached
    list, read and written whole: two round trips per request and, at 1,200 a minute, a list
    of 1,200 times each way. The price: across a window's edge a device may get up to twice
    its rate for a moment.
    """

    scope = "device"
    # Set by SimpleRateThrottle from the rate ("1200/min": 1200 requests, 60 seconds).
    num_requests: int
    duration: int
    retry_after: float = 0.0

    def get_cache_key(self, request: Request, view: APIView) -> str | None:
        if not isinstance(request.auth, DeviceToken):
            return None  # unauthenticated requests have their own throttles
        return self.cache_format % {"scope": self.scope, "ident": request.auth.device_id}

    def allow_request(self, request: Request, view: APIView) -> bool:
        if self.rate is None:
            return True
        key = self.get_cache_key(request, view)
        if key is None:
            return True
        now = self.timer()
        window = int(now // self.duration)
        name = f"tandem:{key}:{window}"
        counting = _counters().pipeline(transaction=True)
        counting.incr(name)
        counting.expire(name, self.duration * 2)
        count, _expiry_set = counting.execute()
        self.retry_after = (window + 1) * self.duration - now
        return int(count) <= self.num_requests

    def wait(self) -> float:
        return self.retry_after


class SchemaThrottle(SimpleRateThrottle):
    """Reads of the API's description (its schema, its docs page and the page's script) per
    address, signed in or not: each read of the schema generates it whole, the costliest
    answer of the API. Counted as sign-ins are, in DRF's throttle over the Redis cache."""

    scope = "schema"

    def get_cache_key(self, request: Request, view: APIView) -> str:
        return self.cache_format % {"scope": self.scope, "ident": self.get_ident(request)}
