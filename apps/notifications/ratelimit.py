"""Per-recipient rate limits, counted atomically in Redis (fixed windows)."""

from __future__ import annotations

import time
from collections.abc import Sequence
from functools import cache

import redis
from django.conf import settings

from apps.notifications.models import Channel


@cache
def _client(url: str) -> redis.Redis:
    return redis.Redis.from_url(url, socket_timeout=5, socket_connect_timeout=5)


def limit_for(channel: str) -> int | None:
    return {
        Channel.SMS: settings.NOTIFICATIONS_RATE_LIMIT_SMS,
        Channel.PUSH: settings.NOTIFICATIONS_RATE_LIMIT_PUSH,
        Channel.EMAIL: settings.NOTIFICATIONS_RATE_LIMIT_EMAIL,
    }.get(Channel(channel))


def take_many(sends: Sequence[tuple[str, str]]) -> list[bool]:
    """Count one message per (channel, recipient key) pair, in one round trip; for each, in
    order, False when that recipient is over the channel's limit. A recipient twice in the
    list counts twice.

    INCR is atomic, so concurrent workers never both take the last slot. A window may let
    up to twice the limit through across its boundary; that is the price of one round trip.
    """
    window = settings.NOTIFICATIONS_RATE_WINDOW_SECONDS
    bucket = int(time.time() // window)
    limited = [(channel, key, limit_for(channel)) for channel, key in sends]
    counted = [(channel, key) for channel, key, limit in limited if limit is not None]
    counts: list[int] = []
    if counted:
        pipe = _client(settings.REDIS_URL).pipeline(transaction=True)
        for channel, key in counted:
            name = f"tandem:notifications:rate:{channel}:{key}:{bucket}"
            pipe.incr(name)
            pipe.expire(name, window * 2)
        counts = [int(value) for value in pipe.execute()[::2]]
    answers = iter(counts)
    return [limit is None or next(answers) <= limit for _, _, limit in limited]
