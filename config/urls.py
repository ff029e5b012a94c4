from __future__ import annotations

from django.conf import settings
from django.contrib import admin
from django.urls import include, path
from django_otp.admin import OTPAdminSite

from apps.accounts.api.docs import DocsView, SchemaView
from apps.common.health import healthz

if settings.ADMIN_REQUIRE_TWO_FACTOR:
    # Staff must also enter a one-time code from their authenticator app or backup codes.
    admin.site.__class__ = OTPAdminSite

api_v1 = [
    path("", include("apps.accounts.api.urls")),
    path("", include("apps.teams.api.urls")),
    path("", include("apps.sync.api.urls")),
    path("", include("apps.notifications.api.urls")),
    path("", include("apps.dispatch.api.urls")),
    path("", include("apps.care.api.urls")),
    path("", include("apps.directory.api.urls")),
    path("", include("apps.followups.api.urls")),
]

urlpatterns = [
    path("healthz", healthz, name="healthz"),
    path("api/v1/", include(api_v1)),
    path("api/schema/", SchemaView.as_view(), name="schema"),
    # The split view serves its script from a URL, so the page needs no inline script (CSP).
    path("api/docs/", DocsView.as_view(url_name="schema"), name="api-docs"),
    path("admin/", admin.site.urls),
]

handler400 = "apps.common.api.errors.bad_request"
handler403 = "apps.common.api.errors.permission_denied"
handler404 = "apps.common.api.errors.page_not_found"
handler500 = "apps.common.api.errors.server_error"
