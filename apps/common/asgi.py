"""Django's HTTP handling under ASGI, entered in one thread per request.

Under ASGI Django runs its middleware chain asynchronously, and a middleware written the
usual way (``MiddlewareMixin``: Django's own, and the CSP, second-factor and lockout ones
here) then runs each of its hooks through a thread handoff of its own: about twenty for one
request, each a trip between the event loop and the request's thread. Every view here is
synchronous (DRF's and the admin's), so the whole chain runs in the request's thread instead,
entered once; the event loop only reads and writes the sockets. An asynchronous view would
still work: Django calls it from that thread.
"""

from __future__ import annotations

from asgiref.sync import sync_to_async
from django.core.handlers.asgi import ASGIHandler
from django.http import HttpRequest, HttpResponseBase


class OneThreadASGIHandler(ASGIHandler):
    def load_middleware(self, is_async: bool = False) -> None:
        super().load_middleware(is_async=False)

    async def get_response_async(self, request: HttpRequest) -> HttpResponseBase:
        # Thread-sensitive: the request's thread, where the chain's database connection lives.
        return await sync_to_async(self.get_response, thread_sensitive=True)(request)
