"""The web process: HTTP (REST API, admin) and websockets in one ASGI application."""

from __future__ import annotations

import os

import django

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings.development")

# Django must be set up before anything imports models (the websocket routes do).
django.setup(set_prefix=False)

from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from django.conf import settings  # noqa: E402

from apps.common.asgi import OneThreadASGIHandler  # noqa: E402
from apps.realtime import gc_policy  # noqa: E402
from apps.realtime.routing import websocket_urlpatterns  # noqa: E402
from apps.realtime.security import BrowserOriginValidator  # noqa: E402

application = ProtocolTypeRouter(
    {
        "http": OneThreadASGIHandler(),
        "websocket": BrowserOriginValidator(URLRouter(websocket_urlpatterns), settings.ALLOWED_HOSTS),
    }
)

# From the start, not at the first websocket: a push of 200 mutations allocates enough to
# set off full collections of the whole heap while no device is connected yet.
gc_policy.start_in_this_process()
