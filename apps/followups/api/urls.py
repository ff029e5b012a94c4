from __future__ import annotations

from django.urls import path

from apps.followups.api import views

urlpatterns = [
    path("followups/steps/", views.StepListView.as_view(), name="followup-steps"),
    path("followups/steps/<uuid:step_id>/", views.StepDetailView.as_view(), name="followup-step"),
    path("followups/steps/<uuid:step_id>/attempts/", views.AttemptView.as_view(), name="followup-attempts"),
    path("followups/steps/<uuid:step_id>/complete/", views.CompleteView.as_view(), name="followup-complete"),
    path("followups/steps/<uuid:step_id>/reschedule/", views.RescheduleView.as_view(), name="followup-reschedule"),
    path("followups/steps/<uuid:step_id>/missed/", views.MissedView.as_view(), name="followup-missed"),
    path("followups/steps/<uuid:step_id>/assign/", views.AssignView.as_view(), name="followup-assign"),
]
