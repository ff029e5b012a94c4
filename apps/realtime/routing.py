from __future__ import annotations

from django.urls import path

from apps.realtime.consumers import DeviceConsumer

websocket_urlpatterns = [
    path("ws/v1/device/", DeviceConsumer.as_asgi()),
]
