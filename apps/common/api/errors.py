"""One error shape for every API error.

    {"status": 400, "code": "invalid_input", "detail": "…",
     "errors": [{"field": "platform", "code": "invalid_choice", "detail": "…"}]}

``field`` is a dotted path into the request body (``items.3.name``); errors that belong to
no single field have ``field: null``.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.exceptions import PermissionDenied, RequestDataTooBig
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.views import defaults
from rest_framework import exceptions, status
from rest_framework.response import Response
from rest_framework.views import set_rollback


class DomainError(Exception):
    """A rule of the domain refused an action; services raise it, the API shows it as a 4xx."""

    status_code: int = status.HTTP_409_CONFLICT
    code = "conflict"

    def __init__(
        self,
        detail: str,
        *,
        code: str | None = None,
        field: str | None = None,
        status_code: int | None = None,
        extra_body: dict[str, Any] | None = None,
    ):
        super().__init__(detail)
        self.detail = detail
        self.field = field
        # Beside the error shape, what a client acts on (the protocols a server speaks).
        self.extra_body = extra_body or {}
        if code is not None:
            self.code = code
        if status_code is not None:
            self.status_code = status_code


def error_body(status_code: int, code: str, detail: str, errors: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    return {"status": status_code, "code": code, "detail": detail, "errors": errors or []}


def payload_too_large_body() -> dict[str, Any]:
    """A body over the size limit: the answer says the limit, so a client can split its batch."""
    limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
    body = error_body(413, "payload_too_large", f"Request body too large: at most {limit} bytes.")
    body["limit_bytes"] = limit
    return body


def _flatten(detail: Any, path: str | None = None) -> list[dict[str, Any]]:
    if isinstance(detail, dict):
        flattened: list[dict[str, Any]] = []
        for key, value in detail.items():
            child = None if key == "non_field_errors" else (f"{path}.{key}" if path else str(key))
            flattened.extend(_flatten(value, child if key != "non_field_errors" else path))
        return flattened
    if isinstance(detail, list):
        if all(isinstance(item, exceptions.ErrorDetail) for item in detail):
            return [{"field": path, "code": item.code, "detail": str(item)} for item in detail]
        flattened = []
        for index, item in enumerate(detail):
            if item:  # DRF reports valid list items as empty dicts
                flattened.extend(_flatten(item, f"{path}.{index}" if path else str(index)))
        return flattened
    code = getattr(detail, "code", "invalid")
    return [{"field": path, "code": code, "detail": str(detail)}]


def exception_handler(exc: Exception, context: dict[str, Any]) -> Response | None:
    if isinstance(exc, RequestDataTooBig):
        set_rollback()
        return Response(payload_too_large_body(), status=status.HTTP_413_REQUEST_ENTITY_TOO_LARGE)
    if isinstance(exc, Http404):
        exc = exceptions.NotFound()
    elif isinstance(exc, PermissionDenied):
        exc = exceptions.PermissionDenied()
    elif isinstance(exc, DomainError):
        set_rollback()
        errors = [{"field": exc.field, "code": exc.code, "detail": exc.detail}]
        body = {**error_body(exc.status_code, exc.code, exc.detail, errors), **exc.extra_body}
        return Response(body, status=exc.status_code)

    if not isinstance(exc, exceptions.APIException):
        return None  # a server fault: let it surface as a 500 (and a retry by the client)

    headers: dict[str, str] = {}
    if auth_header := getattr(exc, "auth_header", None):
        headers["WWW-Authenticate"] = auth_header
    elif exc.status_code == status.HTTP_401_UNAUTHORIZED:
        headers["WWW-Authenticate"] = 'Bearer realm="api"'
    if wait := getattr(exc, "wait", None):
        headers["Retry-After"] = str(int(wait))

    if isinstance(exc, exceptions.ValidationError):
        errors = _flatten(exc.detail)
        body = error_body(exc.status_code, "invalid_input", "The request has invalid fields.", errors)
    else:
        codes = exc.get_codes()
        code = codes if isinstance(codes, str) else exc.default_code
        body = error_body(exc.status_code, code, str(exc.detail))
        # Instructions a client must act on, e.g. purge_local_data for a revoked device.
        body.update(getattr(exc, "extra_body", {}))

    set_rollback()
    return Response(body, status=exc.status_code, headers=headers)


# Django's own error views, answering in the one error shape under /api/ and as HTML elsewhere
# (the admin). They catch what never reaches DRF: unknown URLs, bodies over the size limit.


def _is_api(request: HttpRequest) -> bool:
    return request.path.startswith("/api/")


def bad_request(request: HttpRequest, exception: Exception | None = None) -> HttpResponse:
    if _is_api(request):
        if isinstance(exception, RequestDataTooBig):
            return JsonResponse(payload_too_large_body(), status=413)
        return JsonResponse(error_body(400, "bad_request", "Bad request."), status=400)
    return defaults.bad_request(request, exception or Exception())


def permission_denied(request: HttpRequest, exception: Exception | None = None) -> HttpResponse:
    if _is_api(request):
        return JsonResponse(error_body(403, "permission_denied", "Permission denied."), status=403)
    return defaults.permission_denied(request, exception or Exception())


def page_not_found(request: HttpRequest, exception: Exception | None = None) -> HttpResponse:
    if _is_api(request):
        return JsonResponse(error_body(404, "not_found", "Not found."), status=404)
    return defaults.page_not_found(request, exception or Http404())


def server_error(request: HttpRequest) -> HttpResponse:
    if _is_api(request):
        return JsonResponse(error_body(500, "server_error", "Server error; retry later."), status=500)
    return defaults.server_error(request)
