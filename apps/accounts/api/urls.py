from __future__ import annotations

from django.urls import path

from apps.accounts.api import views

urlpatterns = [
    path("auth/devices/", views.DeviceRegisterView.as_view(), name="device-register"),
    path("auth/token/rotate/", views.TokenRotateView.as_view(), name="token-rotate"),
    path("me/", views.MeView.as_view(), name="me"),
    path("devices/", views.DeviceListView.as_view(), name="device-list"),
    path("devices/<uuid:device_id>/revoke/", views.DeviceRevokeView.as_view(), name="device-revoke"),
    path("programs/<slug:program>/devices/", views.ProgramDeviceListView.as_view(), name="program-device-list"),
    path(
        "programs/<slug:program>/devices/<uuid:device_id>/revoke/",
        views.ProgramDeviceRevokeView.as_view(),
        name="program-device-revoke",
    ),
]
