from __future__ import annotations

from django.contrib import admin
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

from apps.common.health import healthz

api_v1 = [
    path("", include("apps.accounts.api.urls")),
    path("", include("apps.teams.api.urls")),
    path("", include("apps.sync.api.urls")),
]

urlpatterns = [
    path("healthz", healthz, name="healthz"),
    path("api/v1/", include(api_v1)),
    path("api/schema/", SpectacularAPIView.as_view(), name="schema"),
    path("api/docs/", SpectacularSwaggerView.as_view(url_name="schema"), name="api-docs"),
    path("admin/", admin.site.urls),
]

handler400 = "apps.common.api.errors.bad_request"
handler403 = "apps.common.api.errors.permission_denied"
handler404 = "apps.common.api.errors.page_not_found"
handler500 = "apps.common.api.errors.server_error"
