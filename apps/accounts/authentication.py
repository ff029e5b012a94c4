from __future__ import annotations

from django.conf import settings
from rest_framework import exceptions
from rest_framework.authentication import BaseAuthentication, SessionAuthentication, get_authorization_header
from rest_framework.request import Request

from apps.accounts.models import DeviceToken, User
from apps.accounts.selectors import TokenRejected, device_token_for, device_token_recheck
from apps.accounts.services import device_authenticated


class DeviceTokenAuthentication(BaseAuthentication):
    """``Authorization: Bearer <token>``; the request then knows its user and device.

    A view with ``takes_outbox_handover = True`` (the pushes) also takes the token of a
    device locked out (revoked, or its user deactivated), so that the device can still hand
    over the changes it holds: such a view keeps them for review and applies none.
    """

    keyword = b"bearer"

    def authenticate(self, request: Request) -> tuple[User, DeviceToken] | None:
        parts = get_authorization_header(request).split()
        if not parts or parts[0].lower() != self.keyword:
            return None
        if len(parts) != 2:
            raise exceptions.AuthenticationFailed("Malformed Authorization header.", code="token_malformed")
        try:
            raw_token = parts[1].decode()
        except UnicodeDecodeError as error:
            raise exceptions.AuthenticationFailed("Malformed token.", code="token_malformed") from error
        try:
            token = device_token_for(raw_token=raw_token)
        except TokenRejected as rejection:
            view = (request.parser_context or {}).get("view")
            if rejection.outbox_token is not None and getattr(view, "takes_outbox_handover", False):
                token = rejection.outbox_token
            else:
                raise token_failure(rejection) from None
        device_authenticated(token=token)
        return token.device.user, token

    def authenticate_header(self, request: Request) -> str:
        return 'Bearer realm="api"'


class StaffSessionAuthentication(SessionAuthentication):
    """The admin's session, for the few API pages a case manager's browser reads (the API's
    description): staff only, and once they gave their one-time code when the admin asks for
    one. A session of a password alone is no sign-in here either."""

    def authenticate(self, request: Request) -> tuple[User, None] | None:
        user = getattr(request._request, "user", None)
        if user is None or not user.is_active or not user.is_staff:
            return None
        # django-otp's middleware tells whether this session's user gave a code.
        if settings.ADMIN_REQUIRE_TWO_FACTOR and not user.is_verified():
            return None
        self.enforce_csrf(request)
        return user, None


def ensure_still_authenticated(request: Request) -> None:
    """Raise as authenticating the request would now, if its token stopped working while the
    request ran (its device revoked, its user deactivated): a view that read records for the
    device calls this once it has them, so that a read in flight then serves none of them."""
    if not isinstance(request.auth, DeviceToken):
        return
    try:
        device_token_recheck(token_id=request.auth.pk)
    except TokenRejected as rejection:
        raise token_failure(rejection) from None


def token_failure(rejection: TokenRejected) -> exceptions.AuthenticationFailed:
    failure = exceptions.AuthenticationFailed(rejection.problem.message, code=rejection.problem.value)
    failure.extra_body = rejection.instructions()  # type: ignore[attr-defined]
    return failure
