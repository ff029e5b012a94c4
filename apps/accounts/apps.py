from __future__ import annotations

from django.apps import AppConfig


class AccountsConfig(AppConfig):
    name = "apps.accounts"
    label = "accounts"

    def ready(self) -> None:
        from django.contrib.auth.signals import user_logged_in
        from django.db.models.signals import post_delete, post_save, pre_save

        from apps.accounts import schema  # noqa: F401 — registers the OpenAPI auth extension
        from apps.accounts.models import Membership
        from apps.accounts.services import membership_deleted, membership_saved, membership_saving
        from apps.accounts.sessions import session_signed_in

        user_logged_in.connect(session_signed_in, dispatch_uid="accounts.session_signed_in")
        post_delete.connect(membership_deleted, sender=Membership, dispatch_uid="accounts.membership_deleted")
        pre_save.connect(membership_saving, sender=Membership, dispatch_uid="accounts.membership_saving")
        post_save.connect(membership_saved, sender=Membership, dispatch_uid="accounts.membership_saved")
