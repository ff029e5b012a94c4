from __future__ import annotations

from django.urls import path

from apps.teams.api import views

urlpatterns = [
    path("units/", views.UnitListView.as_view(), name="unit-list"),
    path("units/<uuid:unit_id>/", views.UnitDetailView.as_view(), name="unit-detail"),
    path("zones/", views.ZoneListView.as_view(), name="zone-list"),
]
