from __future__ import annotations

from django.urls import path

from apps.sync.api import views

urlpatterns = [
    path("sync/feed/", views.FeedView.as_view(), name="sync-feed"),
    path("sync/snapshot/", views.SnapshotView.as_view(), name="sync-snapshot"),
    path("sync/push/", views.PushView.as_view(), name="sync-push"),
    path("sync/quarantine/", views.QuarantineView.as_view(), name="sync-quarantine"),
    path("sync/quarantine/apply/", views.QuarantineApplyView.as_view(), name="sync-quarantine-apply"),
    path("sync/quarantine/dismiss/", views.QuarantineDismissView.as_view(), name="sync-quarantine-dismiss"),
    path("sync/conflicts/", views.ConflictListView.as_view(), name="sync-conflicts"),
    path("sync/watermelon/pull/", views.WatermelonPullView.as_view(), name="sync-watermelon-pull"),
    path("sync/watermelon/push/", views.WatermelonPushView.as_view(), name="sync-watermelon-push"),
]
