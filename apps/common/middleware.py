"""HTTP caching of the API's answers."""

from __future__ import annotations

from collections.abc import Callable

from django.http import HttpRequest, HttpResponseBase
from django.utils.cache import add_never_cache_headers


class NoStoreAPIMiddleware:
    """Every answer under /api/ is marked ``no-store``: it may carry health information or a
    new token, and a tablet shared across shifts (or a proxy on the way) must keep no copy.
    The admin marks its own pages the same way; static files stay cacheable.
    """

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponseBase]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponseBase:
        response = self.get_response(request)
        if request.path.startswith("/api/"):
            add_never_cache_headers(response)
        return response
