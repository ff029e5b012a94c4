"""The follow-up queue: case managers and crews list steps, record attempts, and close steps.

A step and its attempts are about a person: every read and write is audited (P8).
"""

from __future__ import annotations

from typing import Any
from uuid import UUID

from django.shortcuts import get_object_or_404
from django.utils import timezone
from drf_spectacular.utils import extend_schema
from rest_framework import status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from apps.accounts.models import User
from apps.audit.models import AccessAction
from apps.audit.services import Accessor, record_access
from apps.common.api.errors import DomainError
from apps.common.api.pagination import StandardPagination, page_of
from apps.followups import selectors, services
from apps.followups.api.serializers import (
    AssignInputSerializer,
    AttemptInputSerializer,
    AttemptSerializer,
    CompleteInputSerializer,
    MissedInputSerializer,
    RescheduleInputSerializer,
    StepDetailSerializer,
    StepQuerySerializer,
    StepSerializer,
)
from apps.followups.models import FollowUpStep


def _user(request: Request) -> User:
    assert isinstance(request.user, User)
    return request.user


def _step(request: Request, step_id: str) -> FollowUpStep:
    return get_object_or_404(selectors.steps_visible_to(user=_user(request)), pk=step_id)


def _audit(request: Request, action: AccessAction, record_type: str, ids: list[Any], program_id: Any) -> None:
    record_access(
        accessor=Accessor.from_request(request),
        action=action,
        record_type=record_type,
        record_ids=ids,
        program_id=program_id,
    )


def _detail(request: Request, step_id: str, code: int = status.HTTP_200_OK) -> Response:
    step = _step(request, step_id)
    data = StepDetailSerializer(step, context={"now": timezone.now()}).data
    # The step comes with its contact attempts, their notes included: each is read with it.
    attempt_ids = [UUID(str(attempt["id"])) for attempt in data["attempts"]]
    _audit(request, AccessAction.READ, services.CONTACT_ATTEMPT, attempt_ids, step.program_id)
    return Response(data, status=code)


class StepListView(APIView):
    """The queue: ?status=pending&mine=true&due_before=<time>."""

    @extend_schema(
        parameters=[StepQuerySerializer], operation_id="followups_steps_list", responses=page_of(StepSerializer)
    )
    def get(self, request: Request) -> Response:
        query = StepQuerySerializer(data=request.query_params)
        query.is_valid(raise_exception=True)
        data = query.validated_data
        steps = selectors.step_queue(
            user=_user(request), status=data.get("status"), mine=data["mine"], due_before=data.get("due_before")
        )
        paginator = StandardPagination()
        page = paginator.paginate_queryset(steps, request, view=self)
        for program_id in {step.program_id for step in page or []}:
            ids = [step.pk for step in page or [] if step.program_id == program_id]
            _audit(request, AccessAction.READ, "followups.step", ids, program_id)
        return paginator.get_paginated_response(StepSerializer(page, many=True, context={"now": timezone.now()}).data)


class StepDetailView(APIView):
    @extend_schema(responses=StepDetailSerializer)
    def get(self, request: Request, step_id: str) -> Response:
        step = _step(request, step_id)
        _audit(request, AccessAction.READ, "followups.step", [step.pk], step.program_id)
        return _detail(request, step_id)


class AttemptView(APIView):
    @extend_schema(request=AttemptInputSerializer, responses={201: AttemptSerializer})
    def post(self, request: Request, step_id: str) -> Response:
        step = _step(request, step_id)
        payload = AttemptInputSerializer(data=request.data)
        payload.is_valid(raise_exception=True)
        data = dict(payload.validated_data)
        # The service audits the attempt, as the request's write, in its own transaction.
        attempt = services.attempt_record(
            step=step,
            actor=_user(request),
            accessor=Accessor.from_request(request),
            attempt_id=data.pop("id", None),
            **data,
        )
        return Response(AttemptSerializer(attempt).data, status=status.HTTP_201_CREATED)


class StepActionView(APIView):
    """Base of the step's actions: parse, authorise (by visibility), call the service, audit."""

    input_serializer: type[Any]

    def act(self, step: FollowUpStep, user: User, accessor: Accessor, data: dict[str, Any]) -> None:
        raise NotImplementedError

    def post(self, request: Request, step_id: str) -> Response:
        step = _step(request, step_id)
        payload = self.input_serializer(data=request.data)
        payload.is_valid(raise_exception=True)
        # The service audits the change, as the request's write, in its own transaction.
        self.act(step, _user(request), Accessor.from_request(request), payload.validated_data)
        return _detail(request, step_id)


class CompleteView(StepActionView):
    input_serializer = CompleteInputSerializer

    @extend_schema(request=CompleteInputSerializer, responses=StepDetailSerializer)
    def post(self, request: Request, step_id: str) -> Response:
        return super().post(request, step_id)

    def act(self, step: FollowUpStep, user: User, accessor: Accessor, data: dict[str, Any]) -> None:
        services.step_complete(step=step, actor=user, note=data["note"], accessor=accessor)


class RescheduleView(StepActionView):
    input_serializer = RescheduleInputSerializer

    @extend_schema(request=RescheduleInputSerializer, responses=StepDetailSerializer)
    def post(self, request: Request, step_id: str) -> Response:
        return super().post(request, step_id)

    def act(self, step: FollowUpStep, user: User, accessor: Accessor, data: dict[str, Any]) -> None:
        services.step_reschedule(step=step, actor=user, due_at=data["due_at"], reason=data["reason"], accessor=accessor)


class MissedView(StepActionView):
    input_serializer = MissedInputSerializer

    @extend_schema(request=MissedInputSerializer, responses=StepDetailSerializer)
    def post(self, request: Request, step_id: str) -> Response:
        return super().post(request, step_id)

    def act(self, step: FollowUpStep, user: User, accessor: Accessor, data: dict[str, Any]) -> None:
        services.step_mark_missed(step=step, actor=user, reason=data["reason"], accessor=accessor)


class AssignView(StepActionView):
    input_serializer = AssignInputSerializer

    @extend_schema(request=AssignInputSerializer, responses=StepDetailSerializer)
    def post(self, request: Request, step_id: str) -> Response:
        return super().post(request, step_id)

    def act(self, step: FollowUpStep, user: User, accessor: Accessor, data: dict[str, Any]) -> None:
        owner = User.objects.filter(pk=data["owner_id"], is_active=True).first()
        if owner is None:
            raise DomainError(services.OWNER_NOT_CASE_MANAGER, code="invalid", field="owner_id", status_code=400)
        services.step_assign(step=step, actor=user, owner=owner, accessor=accessor)
