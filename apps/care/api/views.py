"""Referrals on the server: a case manager reads one, moves its task status, records outcomes.

Every read and write here is health information and is audited (P8).
"""

from __future__ import annotations

from uuid import UUID

from django.shortcuts import get_object_or_404
from drf_spectacular.utils import extend_schema
from rest_framework import status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from apps.accounts.models import User
from apps.audit.models import AccessAction
from apps.audit.services import Accessor, record_access
from apps.care import selectors, services
from apps.care.api.serializers import OutcomeInputSerializer, ReferralSerializer, TaskStatusInputSerializer
from apps.care.models import Referral


def _referral(request: Request, referral_id: str) -> Referral:
    assert isinstance(request.user, User)
    return get_object_or_404(selectors.referrals_visible_to(user=request.user), pk=referral_id)


def _audit(request: Request, action: AccessAction, referral: Referral) -> None:
    record_access(
        accessor=Accessor.from_request(request),
        action=action,
        record_type="care.referral",
        record_ids=[referral.pk],
        program_id=referral.program_id,
    )


def _answer(
    request: Request, referral: Referral, code: int = status.HTTP_200_OK, audited: UUID | None = None
) -> Response:
    """The referral, with its outcomes, their details included, and its task timeline, the
    reasons included: each is a health record of its own, read with it. The record the
    request wrote (``audited``) is in the trail already, by the service, as the write or, for
    a retry, as its read: once per request."""
    data = ReferralSerializer(referral).data
    accessor = Accessor.from_request(request)
    for record_type, shown in (
        ("care.referral_outcome", data["outcomes"]),
        (services.TASK_EVENT_RECORD, data["task_timeline"]),
    ):
        ids = [UUID(str(event["id"])) for event in shown]
        record_access(
            accessor=accessor,
            action=AccessAction.READ,
            record_type=record_type,
            record_ids=[pk for pk in ids if pk != audited],
            program_id=referral.program_id,
        )
    return Response(data, status=code)


class ReferralDetailView(APIView):
    @extend_schema(responses=ReferralSerializer)
    def get(self, request: Request, referral_id: str) -> Response:
        referral = _referral(request, referral_id)
        _audit(request, AccessAction.READ, referral)
        return _answer(request, referral)


class ReferralTaskStatusView(APIView):
    """Move the referral along its timeline (received, accepted, in progress, completed, …)."""

    @extend_schema(request=TaskStatusInputSerializer, responses=ReferralSerializer)
    def post(self, request: Request, referral_id: str) -> Response:
        referral = _referral(request, referral_id)
        payload = TaskStatusInputSerializer(data=request.data)
        payload.is_valid(raise_exception=True)
        assert isinstance(request.user, User)
        # The service audits the move (the referral's update, its task event's creation), or
        # for a retry, a read of both, in its own transaction.
        event = services.referral_task_status_change(
            referral=referral,
            to_status=payload.validated_data["status"],
            reason=payload.validated_data["reason"],
            actor=request.user,
            accessor=Accessor.from_request(request),
        )
        return _answer(request, _referral(request, referral_id), audited=event.pk)


class ReferralOutcomeView(APIView):
    """Record an outcome (connected, attended, no-show, declined, unable to reach)."""

    @extend_schema(request=OutcomeInputSerializer, responses={201: ReferralSerializer})
    def post(self, request: Request, referral_id: str) -> Response:
        referral = _referral(request, referral_id)
        payload = OutcomeInputSerializer(data=request.data)
        payload.is_valid(raise_exception=True)
        assert isinstance(request.user, User)
        data = dict(payload.validated_data)
        # The service audits the outcome (a record of its own), as the request's write or, for
        # a retry, a read, in its own transaction.
        outcome = services.referral_outcome_record(
            referral=referral,
            actor=request.user,
            accessor=Accessor.from_request(request),
            event_id=data.pop("id", None),
            **data,
        )
        # The answer shows the referral it was recorded on.
        _audit(request, AccessAction.READ, referral)
        return _answer(request, _referral(request, referral_id), status.HTTP_201_CREATED, audited=outcome.pk)
