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


def test_a_freezing_round_collects_garbage_cycles_rather_than_freeze_them(settings: Any) -> None:
    import gc
    import weakref

    from apps.realtime import gc_policy

    class Node:
        partner: Any = None

    settings.WEBSOCKET_GC_FULL_COLLECT_SECONDS = 3600
    # The process's own rounds (a web application loaded by an earlier test starts them) wait:
    # one of them would freeze the cycle before this round could collect it.
    with gc_policy.round_lock:
        first, second = Node(), Node()
        first.partner, second.partner = second, first  # a cycle: only the collector frees it
        freed = weakref.ref(first)
        del first, second
        gc.disable()  # no automatic collection may free it before the round does
        try:
            gc_policy.tick(last_full_collection=100.0, now=130.0)  # no full collection due
            garbage_frozen = freed() is not None
        finally:
            gc.enable()
            gc.unfreeze()

    assert not garbage_frozen


def test_gc_policy_can_be_turned_off(settings: Any) -> None:
    from apps.realtime import gc_policy

    settings.WEBSOCKET_GC_FREEZE_SECONDS = 0

    assert gc_policy.start_in_this_process() is False


def test_web_process_freezes_its_start_up_objects_before_any_websocket() -> None:
    """A web process that only serves HTTP (no device connected yet) still gets short and
    few collections: loading the application freezes what start-up left alive and raises the
    young collections' threshold."""
    import subprocess
    import sys

    from apps.realtime.gc_policy import YOUNG_COLLECTION_THRESHOLD
    from tests.live import child_environment

    probe = "import gc, config.asgi; print(gc.get_freeze_count(), gc.get_threshold()[0])"
    for freeze_seconds, expected in (("5", (True, YOUNG_COLLECTION_THRESHOLD)), ("0", (False, 700))):
        completed = subprocess.run(
            [sys.executable, "-c", probe],
            env=child_environment(WEBSOCKET_GC_FREEZE_SECONDS=freeze_seconds),
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
        frozen, young_threshold = (int(word) for word in completed.stdout.split()[-2:])
        assert (frozen > 0, young_threshold) == expected, completed.stderr[-2000:]
