from __future__ import annotations

from drf_spectacular.utils import extend_schema
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from apps.accounts.models import DeviceToken, User
from apps.common.api.errors import DomainError
from apps.sync import selectors
from apps.sync.api.serializers import FeedPageSerializer, FeedQuerySerializer
from apps.sync.scopes import scopes_for_user


class FeedView(APIView):
    """Pull the change feed of everything this device's user may see, from a cursor.

    Start with no cursor; keep the returned cursor and send it back. `has_more` means
    pull again at once. Entries are in server order; apply them in order.
    """

    @extend_schema(parameters=[FeedQuerySerializer], responses=FeedPageSerializer)
    def get(self, request: Request) -> Response:
        assert isinstance(request.user, User) and isinstance(request.auth, DeviceToken)
        query = FeedQuerySerializer(data=request.query_params.dict())
        query.is_valid(raise_exception=True)
        try:
            page = selectors.feed_page(
                scopes=scopes_for_user(request.user),
                cursor=query.validated_data.get("cursor"),
                limit=query.validated_data["limit"],
                reader_device_id=request.auth.device_id,
            )
        except selectors.InvalidCursor as error:
            raise DomainError(str(error), code="invalid_cursor", field="cursor", status_code=400) from error
        return Response(
            {
                "entries": [selectors.entry_as_message(entry) for entry in page.entries],
                "cursor": page.position.encode(),
                "has_more": page.has_more,
            }
        )
