from __future__ import annotations

from django.urls import path

from apps.notifications.api import views

urlpatterns = [
    path("notifications/", views.NotificationListView.as_view(), name="notification-list"),
    path("notifications/<uuid:notification_id>/receipts/", views.ReceiptView.as_view(), name="notification-receipts"),
    path(
        "notifications/<uuid:notification_id>/delivery/",
        views.DeliverySummaryView.as_view(),
        name="notification-delivery",
    ),
    path("notifications/push-registrations/", views.PushRegistrationView.as_view(), name="push-registration"),
    path(
        "notifications/push-registrations/<str:provider>/",
        views.PushRegistrationDeleteView.as_view(),
        name="push-registration-delete",
    ),
    path("notifications/push-config/", views.PushConfigView.as_view(), name="push-config"),
    path("notifications/sms/twilio-status/", views.TwilioStatusView.as_view(), name="twilio-status"),
    path("notifications/sms/twilio-inbound/", views.TwilioInboundView.as_view(), name="twilio-inbound"),
]
