from __future__ import annotations

from django.urls import path

from apps.directory.api import views

urlpatterns = [
    path("directory/services/", views.ServiceListView.as_view(), name="directory-services"),
    path("directory/services/<uuid:service_id>/", views.ServiceDetailView.as_view(), name="directory-service"),
    path("directory/services/<uuid:service_id>/capacity/", views.CapacityView.as_view(), name="directory-capacity"),
]
