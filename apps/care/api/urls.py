from __future__ import annotations

from django.urls import path

from apps.care.api import views

urlpatterns = [
    path("care/referrals/<uuid:referral_id>/", views.ReferralDetailView.as_view(), name="referral-detail"),
    path("care/referrals/<uuid:referral_id>/status/", views.ReferralTaskStatusView.as_view(), name="referral-status"),
    path("care/referrals/<uuid:referral_id>/outcomes/", views.ReferralOutcomeView.as_view(), name="referral-outcomes"),
]
