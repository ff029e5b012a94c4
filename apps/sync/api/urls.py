from __future__ import annotations

from django.urls import path

from apps.sync.api import views

urlpatterns = [
    path("sync/feed/", views.FeedView.as_view(), name="sync-feed"),
]
