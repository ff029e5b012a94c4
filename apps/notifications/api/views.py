from __future__ import annotations

from django.conf import settings
from django.shortcuts import get_object_or_404
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import exceptions, status
from rest_framework.parsers import FormParser
from rest_framework.permissions import AllowAny
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from apps.accounts.models import Device, DeviceToken, User
from apps.common.api.pagination import PageQuerySerializer, StandardPagination, page_of, refuse_other_query_parameters
from apps.notifications import selectors, services
from apps.notifications.api.serializers import (
    DeliverySummarySerializer,
    NotificationSerializer,
    PushConfigSerializer,
    PushRegistrationInputSerializer,
    PushRegistrationSerializer,
    ReceiptInputSerializer,
    ReceiptSerializer,
)
from apps.notifications.channels.twilio import signature_is_valid
from apps.notifications.models import PushProvider


def _device(request: Request) -> Device:
    assert isinstance(request.auth, DeviceToken)
    return request.auth.device


class PushRegistrationView(APIView):
    """Register or refresh this device's push token (FCM, APNs) or Web Push subscription."""

    @extend_schema(
        request=PushRegistrationInputSerializer,
        responses={200: PushRegistrationSerializer, 201: PushRegistrationSerializer},
    )
    def post(self, request: Request) -> Response:
        payload = PushRegistrationInputSerializer(data=request.data)
        payload.is_valid(raise_exception=True)
        data = payload.validated_data
        subscription = data.get("subscription")
        registration, created = services.push_registration_save(
            device=_device(request),
            provider=data["provider"],
            token=subscription["endpoint"] if subscription else data["token"],
            p256dh=subscription["keys"]["p256dh"] if subscription else "",
            auth_secret=subscription["keys"]["auth"] if subscription else "",
        )
        return Response(
            PushRegistrationSerializer(registration).data,
            status=status.HTTP_201_CREATED if created else status.HTTP_200_OK,
        )


class PushRegistrationDeleteView(APIView):
    """Stop push to this device at one provider (on sign-out)."""

    @extend_schema(
        request=None,
        responses={204: None},
        parameters=[OpenApiParameter("provider", location=OpenApiParameter.PATH, enum=PushProvider.values)],
    )
    def delete(self, request: Request, provider: str) -> Response:
        if provider not in PushProvider.values:
            raise exceptions.NotFound(f"No push provider {provider!r}.")
        services.push_registration_remove(device=_device(request), provider=provider)
        return Response(status=status.HTTP_204_NO_CONTENT)


class PushConfigView(APIView):
    """What a browser needs to subscribe: the VAPID public key (applicationServerKey)."""

    @extend_schema(responses=PushConfigSerializer)
    def get(self, request: Request) -> Response:
        return Response(PushConfigSerializer({"vapid_public_key": settings.VAPID_PUBLIC_KEY}).data)


class NotificationListView(APIView):
    """The signed-in user's notifications, newest first (a device catching up after being away)."""

    @extend_schema(
        operation_id="notifications_list", parameters=[PageQuerySerializer], responses=page_of(NotificationSerializer)
    )
    def get(self, request: Request) -> Response:
        assert isinstance(request.user, User)
        refuse_other_query_parameters(request)
        paginator = StandardPagination()
        page = paginator.paginate_queryset(selectors.notifications_received_by(user=request.user), request, view=self)
        return paginator.get_paginated_response(NotificationSerializer(page, many=True).data)


class ReceiptView(APIView):
    """This device confirms a notification: delivered, opened or acknowledged."""

    @extend_schema(request=ReceiptInputSerializer, responses=ReceiptSerializer)
    def post(self, request: Request, notification_id: str) -> Response:
        payload = ReceiptInputSerializer(data=request.data)
        payload.is_valid(raise_exception=True)
        recipient = services.receipt_record(
            notification_id=notification_id, device=_device(request), status=payload.validated_data["status"]
        )
        return Response(
            ReceiptSerializer(
                {
                    "notification": recipient.notification_id,
                    "confirmed_at": recipient.confirmed_at,
                    "acknowledged_at": recipient.acknowledged_at,
                }
            ).data
        )


class DeliverySummaryView(APIView):
    """For dispatchers and supervisors of the program: what became of a notification."""

    @extend_schema(responses=DeliverySummarySerializer)
    def get(self, request: Request, notification_id: str) -> Response:
        assert isinstance(request.user, User)
        notification = get_object_or_404(selectors.notifications_overseen_by(user=request.user), pk=notification_id)
        return Response(DeliverySummarySerializer(selectors.delivery_summary(notification=notification)).data)


class _TwilioWebhook(APIView):
    """A request from Twilio, authenticated by its X-Twilio-Signature over the URL Twilio was
    given (not the one this request reached through proxies) and the form parameters."""

    authentication_classes = []
    permission_classes = [AllowAny]
    parser_classes = [FormParser]

    def signed_params(self, request: Request, url: str) -> dict[str, str]:
        params = {key: str(request.data.get(key, "")) for key in request.data}
        if not signature_is_valid(
            auth_token=settings.TWILIO_AUTH_TOKEN,
            url=url,
            params=params,
            signature=request.headers.get("X-Twilio-Signature", ""),
        ):
            raise exceptions.PermissionDenied("Invalid Twilio signature.", code="invalid_signature")
        return params


class TwilioStatusView(_TwilioWebhook):
    """Twilio's delivery reports for our SMS."""

    @extend_schema(exclude=True)
    def post(self, request: Request) -> Response:
        params = self.signed_params(request, settings.TWILIO_STATUS_CALLBACK_URL)
        services.sms_status_record(
            provider_message_id=params.get("MessageSid", ""),
            status=params.get("MessageStatus", ""),
            error_code=params.get("ErrorCode", ""),
        )
        return Response(status=status.HTTP_204_NO_CONTENT)


class TwilioInboundView(_TwilioWebhook):
    """Replies to our SMS (Twilio's inbound webhook): STOP opts the number out, START back in."""

    @extend_schema(exclude=True)
    def post(self, request: Request) -> Response:
        params = self.signed_params(request, settings.TWILIO_INBOUND_URL)
        services.sms_inbound_record(
            from_number=params.get("From", ""),
            body=params.get("Body", ""),
            opt_out_type=params.get("OptOutType", ""),
            message_sid=params.get("MessageSid", ""),
        )
        return Response(status=status.HTTP_204_NO_CONTENT)
