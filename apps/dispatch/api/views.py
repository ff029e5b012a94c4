"""Dispatch over REST: thin views that parse, authorise and call the services.

Dispatchers and supervisors of a program act on its incidents; a crew member sees and acts
on the assignments of their own unit. Anything else is not found (404) and changes nothing.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from typing import Any
from uuid import UUID

from django.db.models import QuerySet
from django.shortcuts import get_object_or_404
from django.utils import timezone
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema
from rest_framework import status
from rest_framework.exceptions import PermissionDenied
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from apps.accounts.models import Device, DeviceToken, Program, User
from apps.audit.models import AccessAction
from apps.audit.services import Accessor, record_access
from apps.common.api.errors import DomainError
from apps.common.api.pagination import StandardPagination
from apps.dispatch import selectors, services
from apps.dispatch.api import serializers as s
from apps.dispatch.models import Assignment, AssignmentStatus, Incident
from apps.dispatch.payloads import (
    assignment_payload,
    assignment_payloads_as_seen_by,
    event_payload,
    incident_payload,
    unit_payload,
)
from apps.dispatch.services import ASSIGNMENT_RECORD, INCIDENT_RECORD
from apps.teams.models import Unit, UnitStatus, Zone


def _actor(request: Request) -> tuple[User, Device | None]:
    assert isinstance(request.user, User)
    device = request.auth.device if isinstance(request.auth, DeviceToken) else None
    return request.user, device


def _valid(serializer_class: type[s.StrictSerializer], data: Any) -> dict[str, Any]:
    serializer = serializer_class(data=data)
    serializer.is_valid(raise_exception=True)
    return dict(serializer.validated_data)


def _dispatch_program(user: User, slug: str) -> Program:
    program = selectors.dispatch_programs(user=user).filter(slug=slug).first()
    if program is None:
        raise DomainError("No such program.", code="not_found", field="program", status_code=404)
    return program


def _incident(request: Request, incident_id: UUID) -> Incident:
    user, _device = _actor(request)
    return get_object_or_404(selectors.incidents_visible_to(user=user), pk=incident_id)


def _assignment(request: Request, assignment_id: UUID) -> Assignment:
    user, _device = _actor(request)
    return get_object_or_404(selectors.assignments_visible_to(user=user), pk=assignment_id)


def _audit_incidents(request: Request, action: AccessAction, incidents: Iterable[Incident]) -> None:
    """A call's callback number, address and nature are health information (P8)."""
    _audit(request, action, INCIDENT_RECORD, ((incident.pk, incident.program_id) for incident in incidents))


def _audit_assignments(request: Request, action: AccessAction, assignments: Iterable[Assignment]) -> None:
    """An assignment is sent with its incident, so handing one out is a read of the call."""
    records = ((assignment.pk, assignment.incident.program_id) for assignment in assignments)
    _audit(request, action, ASSIGNMENT_RECORD, records)


def _audit(request: Request, action: AccessAction, record_type: str, records: Iterable[tuple[UUID, UUID]]) -> None:
    by_program: dict[UUID, list[UUID]] = defaultdict(list)
    for record_id, program_id in records:
        by_program[program_id].append(record_id)
    accessor = Accessor.from_request(request)
    for program_id, record_ids in by_program.items():
        record_access(
            accessor=accessor, action=action, record_type=record_type, record_ids=record_ids, program_id=program_id
        )


def _require_crew(user: User, assignment: Assignment) -> None:
    if not selectors.is_crew_of(user=user, unit_id=assignment.unit_id):
        raise PermissionDenied("Only the crew of the assigned unit can do this.")


def _require_dispatch(user: User, program_id: UUID) -> None:
    if not selectors.can_dispatch(user=user, program_id=program_id):
        raise PermissionDenied("Only the program's dispatchers and supervisors can do this.")


class IncidentListCreateView(APIView):
    @extend_schema(
        operation_id="dispatch_incidents_list", parameters=[s.IncidentQuerySerializer], responses=OpenApiTypes.OBJECT
    )
    def get(self, request: Request) -> Response:
        """Incidents of the programs you dispatch for, newest first."""
        user, _device = _actor(request)
        query = _valid(s.IncidentQuerySerializer, request.query_params)
        incidents = selectors.incidents_visible_to(user=user).order_by("-received_at")
        if "program" in query:
            incidents = incidents.filter(program__slug=query["program"])
        if "status" in query:
            incidents = incidents.filter(status=query["status"])
        paginator = StandardPagination()
        page = paginator.paginate_queryset(incidents, request, view=self) or []
        _audit_incidents(request, AccessAction.READ, page)
        return paginator.get_paginated_response([incident_payload(incident) for incident in page])

    @extend_schema(request=s.IncidentIntakeSerializer, responses={201: OpenApiTypes.OBJECT, 200: OpenApiTypes.OBJECT})
    def post(self, request: Request) -> Response:
        """Take in a call. Idempotent by `external_call_id`: a retry answers 200 with the same incident."""
        user, device = _actor(request)
        data = _valid(s.IncidentIntakeSerializer, request.data)
        program = _dispatch_program(user, data["program"])
        location, screen = data["location"], data["safety_screen"]
        zone = None
        if location["zone"]:
            zone = Zone.objects.filter(program=program, code=location["zone"]).first()
            if zone is None:
                raise DomainError(
                    "No such zone in this program.", code="not_found", field="location.zone", status_code=400
                )
        received_at = services.validate_observed_at(data["received_at"], field="received_at") or timezone.now()
        incident, created = services.incident_intake(
            program=program,
            actor=user,
            device=device,
            external_call_id=data["external_call_id"],
            source=data["source"],
            priority=data["priority"],
            received_at=received_at,
            address=location["address"],
            zone=zone,
            latitude=location["latitude"],
            longitude=location["longitude"],
            location_accuracy_m=location["accuracy_m"],
            callback_number=data["callback_number"],
            nature=data["nature"],
            accessor=Accessor.from_request(request),
            **screen,
        )
        return Response(incident_payload(incident), status=status.HTTP_201_CREATED if created else status.HTTP_200_OK)


class IncidentDetailView(APIView):
    @extend_schema(responses=OpenApiTypes.OBJECT)
    def get(self, request: Request, incident_id: UUID) -> Response:
        """The incident with its assignments and its timeline (server time order)."""
        incident = _incident(request, incident_id)
        assignments = incident.assignments.select_related("incident").order_by("offered_at")
        _audit_incidents(request, AccessAction.READ, [incident])
        return Response(
            {
                **incident_payload(incident),
                "assignments": [assignment_payload(a, with_incident=False) for a in assignments],
                "timeline": [event_payload(event) for event in incident.timeline.order_by("at", "id")],
            }
        )


class IncidentOverrideView(APIView):
    @extend_schema(request=s.OverrideSerializer, responses=OpenApiTypes.OBJECT)
    def post(self, request: Request, incident_id: UUID) -> Response:
        """Choose a different response model than triage recommended; `reason` is required then."""
        user, device = _actor(request)
        incident = _incident(request, incident_id)
        data = _valid(s.OverrideSerializer, request.data)
        incident = services.incident_override(
            incident=incident,
            actor=user,
            device=device,
            response=data["response"],
            reason=data["reason"],
            accessor=Accessor.from_request(request),
        )
        return Response(incident_payload(incident))


class IncidentCloseView(APIView):
    @extend_schema(request=s.CloseSerializer, responses=OpenApiTypes.OBJECT)
    def post(self, request: Request, incident_id: UUID) -> Response:
        """Close the incident. An eligible call no unit served needs `unserved_reason`."""
        user, device = _actor(request)
        incident = _incident(request, incident_id)
        data = _valid(s.CloseSerializer, request.data)
        incident = services.incident_close(
            incident=incident,
            actor=user,
            device=device,
            unserved_reason=data["unserved_reason"],
            note=data["note"],
            accessor=Accessor.from_request(request),
        )
        return Response(incident_payload(incident))


class RecommendedUnitsView(APIView):
    @extend_schema(responses=OpenApiTypes.OBJECT)
    def get(self, request: Request, incident_id: UUID) -> Response:
        """Available units of the chosen response model, nearest first (coordinates, then zone)."""
        incident = _incident(request, incident_id)
        recommendations = selectors.recommended_units(incident=incident)
        return Response(
            {
                "response_model": incident.chosen_response,
                "units": [recommendation.as_data() for recommendation in recommendations],
            }
        )


class IncidentOfferView(APIView):
    @extend_schema(request=s.OfferSerializer, responses={201: OpenApiTypes.OBJECT})
    def post(self, request: Request, incident_id: UUID) -> Response:
        """Offer the incident to a unit; every device of its crew gets it over the feed."""
        user, device = _actor(request)
        incident = _incident(request, incident_id)
        data = _valid(s.OfferSerializer, request.data)
        unit = Unit.objects.filter(pk=data["unit"], program_id=incident.program_id).first()
        if unit is None:
            raise DomainError("No such unit.", code="not_found", field="unit", status_code=400)
        assignment = services.assignment_offer(
            incident=incident,
            unit=unit,
            actor=user,
            device=device,
            additional=data["additional"],
            accessor=Accessor.from_request(request),
        )
        return Response(assignment_payload(assignment), status=status.HTTP_201_CREATED)


class UnitBoardView(APIView):
    @extend_schema(parameters=[s.BoardQuerySerializer], responses=OpenApiTypes.OBJECT)
    def get(self, request: Request) -> Response:
        """Every unit of the program: status, seconds in status, active assignments."""
        user, _device = _actor(request)
        program = _dispatch_program(user, _valid(s.BoardQuerySerializer, request.query_params)["program"])
        now = timezone.now()
        units = selectors.units_for_dispatch(user=user, program=program)
        return Response(
            {
                "units": [
                    {
                        **unit_payload(unit),
                        "seconds_in_status": int((now - unit.status_changed_at).total_seconds()),
                        "active_assignments": [
                            {"id": str(a.pk), "incident": str(a.incident_id), "status": a.status}
                            for a in getattr(unit, "active_assignments", [])
                        ],
                    }
                    for unit in units
                ]
            }
        )


class UnitAvailabilityView(APIView):
    @extend_schema(request=s.UnitAvailabilitySerializer, responses=OpenApiTypes.OBJECT)
    def post(self, request: Request, unit_id: UUID) -> Response:
        """Put a unit in service (available) or out of service: its crew or a dispatcher."""
        user, device = _actor(request)
        unit = get_object_or_404(selectors.units_actionable_by(user=user), pk=unit_id)
        data = _valid(s.UnitAvailabilitySerializer, request.data)
        unit = services.unit_set_availability(
            unit=unit, actor=user, device=device, status=UnitStatus(data["status"]), observed_at=data["observed_at"]
        )
        return Response(unit_payload(unit))


class AssignmentListView(APIView):
    @extend_schema(
        operation_id="dispatch_assignments_list",
        parameters=[s.AssignmentQuerySerializer],
        responses=OpenApiTypes.OBJECT,
    )
    def get(self, request: Request) -> Response:
        """Assignments you may see: your unit's (crew), or your programs' (dispatch)."""
        user, _device = _actor(request)
        query = _valid(s.AssignmentQuerySerializer, request.query_params)
        assignments: QuerySet[Assignment] = selectors.assignments_visible_to(user=user)
        if query["active"]:
            assignments = assignments.filter(status__in=AssignmentStatus.active())
        paginator = StandardPagination()
        page = paginator.paginate_queryset(assignments, request, view=self) or []
        _audit_assignments(request, AccessAction.READ, page)
        return paginator.get_paginated_response(assignment_payloads_as_seen_by(user, page))


class AssignmentDetailView(APIView):
    @extend_schema(responses=OpenApiTypes.OBJECT)
    def get(self, request: Request, assignment_id: UUID) -> Response:
        assignment = _assignment(request, assignment_id)
        _audit_assignments(request, AccessAction.READ, [assignment])
        user, _device = _actor(request)
        return Response(assignment_payloads_as_seen_by(user, [assignment])[0])


class AssignmentAcknowledgeView(APIView):
    @extend_schema(request=s.ObservedSerializer, responses=OpenApiTypes.OBJECT)
    def post(self, request: Request, assignment_id: UUID) -> Response:
        """Acknowledge for your crew. First wins; every retry or other member gets the same answer.
        After the offer has gone to another unit: 409 `superseded`."""
        user, device = _actor(request)
        assignment = _assignment(request, assignment_id)
        _require_crew(user, assignment)
        data = _valid(s.ObservedSerializer, request.data)
        assert device is not None
        assignment = services.assignment_acknowledge(
            assignment_id=assignment.pk,
            user=user,
            device=device,
            observed_at=data["observed_at"],
            accessor=Accessor.from_request(request),
        )
        return Response(assignment_payloads_as_seen_by(user, [assignment])[0])


class AssignmentStatusView(APIView):
    @extend_schema(request=s.StatusUpdateSerializer, responses=OpenApiTypes.OBJECT)
    def post(self, request: Request, assignment_id: UUID) -> Response:
        """Report en route / on scene / transporting / cleared, possibly recorded offline earlier.
        `applied: false` means it was kept in the timeline but the assignment had already moved on."""
        user, device = _actor(request)
        assignment = _assignment(request, assignment_id)
        if not selectors.is_crew_of(user=user, unit_id=assignment.unit_id):
            _require_dispatch(user, assignment.incident.program_id)  # dispatch may relay a radio report
        data = _valid(s.StatusUpdateSerializer, request.data)
        update = services.assignment_update_status(
            assignment_id=assignment.pk,
            user=user,
            device=device,
            status=AssignmentStatus(data["status"]),
            observed_at=data["observed_at"],
            client_event_id=data["event_id"],
            accessor=Accessor.from_request(request),
        )
        return Response(
            {
                **assignment_payloads_as_seen_by(user, [update.assignment])[0],
                "applied": update.applied,
                "status_time": update.status_time,
            }
        )


class AssignmentDeclineView(APIView):
    @extend_schema(request=s.ReasonSerializer, responses=OpenApiTypes.OBJECT)
    def post(self, request: Request, assignment_id: UUID) -> Response:
        """Decline, saying why; the incident is offered to the next recommended unit."""
        user, device = _actor(request)
        assignment = _assignment(request, assignment_id)
        _require_crew(user, assignment)
        data = _valid(s.ReasonSerializer, request.data)
        assert device is not None
        assignment = services.assignment_decline(
            assignment_id=assignment.pk,
            user=user,
            device=device,
            reason=data["reason"],
            observed_at=data["observed_at"],
            accessor=Accessor.from_request(request),
        )
        return Response(assignment_payloads_as_seen_by(user, [assignment])[0])


class AssignmentCheckInView(APIView):
    @extend_schema(request=s.ObservedSerializer, responses=OpenApiTypes.OBJECT)
    def post(self, request: Request, assignment_id: UUID) -> Response:
        """On scene: confirm the crew is safe. Missing one alerts the supervisor."""
        user, device = _actor(request)
        assignment = _assignment(request, assignment_id)
        _require_crew(user, assignment)
        data = _valid(s.ObservedSerializer, request.data)
        assert device is not None
        assignment = services.assignment_check_in(
            assignment_id=assignment.pk,
            user=user,
            device=device,
            observed_at=data["observed_at"],
            accessor=Accessor.from_request(request),
        )
        return Response(assignment_payloads_as_seen_by(user, [assignment])[0])


class AssignmentCancelView(APIView):
    @extend_schema(request=s.CancelSerializer, responses=OpenApiTypes.OBJECT)
    def post(self, request: Request, assignment_id: UUID) -> Response:
        """Dispatch withdraws the offer or recalls the unit."""
        user, device = _actor(request)
        assignment = _assignment(request, assignment_id)
        _require_dispatch(user, assignment.incident.program_id)
        data = _valid(s.CancelSerializer, request.data)
        assignment = services.assignment_cancel(
            assignment_id=assignment.pk,
            actor=user,
            device=device,
            reason=data["reason"],
            accessor=Accessor.from_request(request),
        )
        return Response(assignment_payload(assignment))
