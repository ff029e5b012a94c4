from __future__ import annotations

from django.urls import path

from apps.dispatch.api import views

urlpatterns = [
    path("dispatch/incidents/", views.IncidentListCreateView.as_view(), name="incident-list"),
    path("dispatch/incidents/<uuid:incident_id>/", views.IncidentDetailView.as_view(), name="incident-detail"),
    path(
        "dispatch/incidents/<uuid:incident_id>/override/",
        views.IncidentOverrideView.as_view(),
        name="incident-override",
    ),
    path("dispatch/incidents/<uuid:incident_id>/close/", views.IncidentCloseView.as_view(), name="incident-close"),
    path(
        "dispatch/incidents/<uuid:incident_id>/recommended-units/",
        views.RecommendedUnitsView.as_view(),
        name="incident-recommended-units",
    ),
    path(
        "dispatch/incidents/<uuid:incident_id>/assignments/", views.IncidentOfferView.as_view(), name="incident-offer"
    ),
    path("dispatch/board/", views.UnitBoardView.as_view(), name="unit-board"),
    path("dispatch/units/<uuid:unit_id>/availability/", views.UnitAvailabilityView.as_view(), name="unit-availability"),
    path("dispatch/assignments/", views.AssignmentListView.as_view(), name="assignment-list"),
    path("dispatch/assignments/<uuid:assignment_id>/", views.AssignmentDetailView.as_view(), name="assignment-detail"),
    path(
        "dispatch/assignments/<uuid:assignment_id>/acknowledge/",
        views.AssignmentAcknowledgeView.as_view(),
        name="assignment-acknowledge",
    ),
    path(
        "dispatch/assignments/<uuid:assignment_id>/status/",
        views.AssignmentStatusView.as_view(),
        name="assignment-status",
    ),
    path(
        "dispatch/assignments/<uuid:assignment_id>/decline/",
        views.AssignmentDeclineView.as_view(),
        name="assignment-decline",
    ),
    path(
        "dispatch/assignments/<uuid:assignment_id>/check-in/",
        views.AssignmentCheckInView.as_view(),
        name="assignment-check-in",
    ),
    path(
        "dispatch/assignments/<uuid:assignment_id>/cancel/",
        views.AssignmentCancelView.as_view(),
        name="assignment-cancel",
    ),
]
