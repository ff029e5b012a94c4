from __future__ import annotations

from typing import Any


def test_gc_policy_freezes_live_objects_and_collects_fully_when_due(settings: Any) -> None:
    import gc

    from apps.realtime import gc_policy

    settings.WEBSOCKET_GC_FULL_COLLECT_SECONDS = 60
    try:
        kept = gc_policy.tick(last_full_collection=100.0, now=130.0)
        frozen = gc.get_freeze_count()
        collected_at = gc_policy.tick(last_full_collection=100.0, now=161.0)
    finally:
        gc.unfreeze()

    assert (kept, frozen > 0, collected_at) == (100.0, True, 161.0)


def test_gc_policy_can_be_turned_off(settings: Any) -> None:
    from apps.realtime import gc_policy

    settings.WEBSOCKET_GC_FREEZE_SECONDS = 0

    assert gc_policy.start_in_this_process() is False
