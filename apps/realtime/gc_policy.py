"""Keep CPython's full garbage collections short in a web process holding thousands of sockets.

A full (generation 2) collection walks every tracked object of the process while holding
the GIL: with 2,000 connected devices that measured 0.3 to 0.6 s, during which no socket of
the process moves (tests/bench/bench_dispatch.py). Connection objects are long-lived, so
this policy periodically moves every object alive into the permanent generation
(gc.freeze), which later collections skip; they then scan only what was allocated since.

Each round collects before it freezes, walking only what was allocated since the round
before, so garbage is never frozen. The cost: a reference cycle among frozen objects that
becomes garbage later (a socket that went away, a request that was in flight) is not
reclaimed until the next full collection, which this policy runs, unfrozen, every
WEBSOCKET_GC_FULL_COLLECT_SECONDS — one long pause at a known rate instead of many at
random. Off unless WEBSOCKET_GC_FREEZE_SECONDS > 0. It runs in every web process from its
start (config/asgi.py): the objects alive after start-up (modules, settings, URL patterns)
are frozen at once, so the collections a busy push sets off stay short too.
"""

from __future__ import annotations

import gc
import threading
import time

from django.conf import settings

_lock = threading.Lock()
round_lock = threading.RLock()
_started = False
# Allocations (net, of container objects) between two young collections; CPython's default
# is 700. A push of 200 mutations allocates tens of thousands: at 700 the young collections
# ran hundreds of times a push and cost about 5 % of its CPU; the rounds below still collect
# every few seconds whatever the young collections leave.
YOUNG_COLLECTION_THRESHOLD = 10_000


def start_in_this_process() -> bool:
    """Start the policy once per process; returns whether it runs."""
    global _started
    freeze_every = settings.WEBSOCKET_GC_FREEZE_SECONDS
    if freeze_every <= 0:
        return False
    with _lock:
        if not _started:
            _started = True
            _young, *older = gc.get_threshold()
            gc.set_threshold(YOUNG_COLLECTION_THRESHOLD, *older)
            gc.freeze()
            threading.Thread(target=_run, args=(freeze_every,), name="gc-freeze", daemon=True).start()
    return True


def _run(freeze_every: int) -> None:
    last_full_collection = time.monotonic()
    while True:
        time.sleep(freeze_every)
        last_full_collection = tick(last_full_collection=last_full_collection, now=time.monotonic())


def tick(*, last_full_collection: float, now: float) -> float:
    """One round: collect, then freeze what is alive. Returns when the last full collection ran.

    Rounds hold ``round_lock`` (reentrant): one that ran while another was between its
    collection and its freeze would freeze what became garbage in between."""
    with round_lock:
        full_every = settings.WEBSOCKET_GC_FULL_COLLECT_SECONDS
        if full_every > 0 and now - last_full_collection >= full_every:
            gc.unfreeze()  # this round's collection walks everything, earlier rounds' objects too
            last_full_collection = now
        # Garbage first: otherwise a cycle that is already garbage (a request answered, a socket
        # gone) would be frozen with the live objects, where no collection reaches it.
        gc.collect()
        gc.freeze()
    return last_full_collection
