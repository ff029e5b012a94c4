from __future__ import annotations

from django.apps import AppConfig


class FollowupsConfig(AppConfig):
    name = "apps.followups"
    label = "followups"

    def ready(self) -> None:
        # React to care's events (plans on encounters and referrals, steps closed by outcomes,
        # plans, steps and attempts moved with their encounter) and let devices sync attempts.
        from apps.audit.registry import register_health_record
        from apps.care import hooks
        from apps.followups import services, sync
        from apps.followups.models import FollowUpPlan, FollowUpStep

        hooks.register("encounter_saved", services.on_encounter_saved)
        hooks.register("encounter_reassigned", services.on_encounter_reassigned)
        hooks.register("referral_saved", services.on_referral_saved)
        hooks.register("outcome_recorded", services.on_outcome_recorded)
        hooks.register_records_under_encounter(sync.attempts_under_encounter)
        hooks.register_places_under_encounter(sync.steps_under_encounter)
        sync.register_synced_types()
        # A step is about a person (who to contact, why it was missed): reading it is audited.
        register_health_record(services.STEP_RECORD, FollowUpStep)
        # So is its plan (whose follow-up, after which encounter): moving it is audited too.
        register_health_record(services.PLAN_RECORD, FollowUpPlan)
