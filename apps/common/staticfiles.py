"""WhiteNoise in an asynchronous middleware chain.

WhiteNoise's middleware is synchronous only. Under ASGI, Django then runs it in a thread and
the middleware inside it back on the event loop: two thread hops for every request, an API
push as much as a stylesheet. This middleware hands WhiteNoise only the requests for its
files (under STATIC_URL) and passes every other request straight on, so the chain stays
asynchronous. Under WSGI it is WhiteNoise itself.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from asgiref.sync import async_to_sync, iscoroutinefunction, sync_to_async
from django.conf import settings
from django.http import HttpRequest, HttpResponseBase
from django.utils.decorators import sync_and_async_middleware
from whitenoise.middleware import WhiteNoiseMiddleware


@sync_and_async_middleware
def static_files_middleware(get_response: Callable[[HttpRequest], Any]) -> Callable[[HttpRequest], Any]:
    if not iscoroutinefunction(get_response):
        return WhiteNoiseMiddleware(get_response)
    # WhiteNoise passes on a request under its prefix that names no file of its own.
    whitenoise = WhiteNoiseMiddleware(async_to_sync(get_response))
    serve = sync_to_async(whitenoise)
    # With WHITENOISE_ROOT it serves files outside STATIC_URL too: then it sees every request.
    prefix = "/" if getattr(settings, "WHITENOISE_ROOT", None) else whitenoise.static_prefix
    pass_on: Callable[[HttpRequest], Awaitable[HttpResponseBase]] = get_response

    async def middleware(request: HttpRequest) -> HttpResponseBase:
        if request.path_info.startswith(prefix):
            return await serve(request)
        return await pass_on(request)

    return middleware
