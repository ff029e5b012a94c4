"""The cache's Redis connections, shared by the whole process.

Django builds a cache object per thread, and its Redis backend a connection pool per cache
object. Under ASGI every request runs in a thread of its own, so every request that touched
the cache (the API's rate limits: every request) opened a new Redis connection and left the
old pool to the garbage collector. ``OPTIONS["pool_class"]`` names this class instead: one
pool per server and options for the process, which waits for a free connection rather than
failing when all are busy.
"""

from __future__ import annotations

import threading
from typing import Any, ClassVar

import redis


class ProcessConnectionPool(redis.BlockingConnectionPool):
    _shared: ClassVar[dict[tuple[str, str], ProcessConnectionPool]] = {}
    _shared_lock: ClassVar[threading.Lock] = threading.Lock()

    @classmethod
    def from_url(cls, url: str, **kwargs: Any) -> ProcessConnectionPool:
        key = (url, repr(sorted(kwargs.items())))
        with cls._shared_lock:
            pool = cls._shared.get(key)
            if pool is None:
                pool = cls._shared[key] = super().from_url(url, **kwargs)
            return pool
