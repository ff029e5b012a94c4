"""Settings of the sync mechanism, from the environment (defaults work for a newcomer)."""

from __future__ import annotations

from django.core.exceptions import ImproperlyConfigured

from config.env import env_int, env_list

# Most mutations one push may carry; a bigger batch gets 413 with this limit in the body.
PUSH_MAX_MUTATIONS = env_int("SYNC_PUSH_MAX_MUTATIONS", 500)
# A device time more than this far ahead of the server's clock is flagged as implausible.
CLOCK_SKEW_SECONDS = env_int("SYNC_CLOCK_SKEW_SECONDS", 300)
# ...and so is one older than the longest offline period a device is expected to survive.
MAX_OFFLINE_DAYS = env_int("SYNC_MAX_OFFLINE_DAYS", 60)
# Feed entries older than this are pruned; a cursor from before then gets 410 and the
# device bootstraps again.
FEED_RETENTION_DAYS = env_int("SYNC_FEED_RETENTION_DAYS", 30)
# Sync protocol versions this server speaks (header Tandem-Sync-Protocol); the newest is
# first. Requests without the header are version 1 (the feed as first shipped).
SUPPORTED_PROTOCOLS = [int(version) for version in env_list("SYNC_SUPPORTED_PROTOCOLS", ["2", "1"])]
SNAPSHOT_PAGE_MAX = 5_000
# Records a WatermelonDB first sync brings per pull: its snapshot comes in parts this size,
# each resumable from its timestamp (apps.sync.watermelon).
WATERMELON_FIRST_SYNC_PART = env_int("SYNC_WATERMELON_FIRST_SYNC_PART", 10_000)
if WATERMELON_FIRST_SYNC_PART < 1:
    raise ImproperlyConfigured("SYNC_WATERMELON_FIRST_SYNC_PART is a number of records, at least 1.")
# Writes of synced records nudge a scope at most once per this window (and once more at its
# end if more came in it); 0 nudges at every write (apps.sync.nudges).
NUDGE_WINDOW_MS = env_int("SYNC_NUDGE_WINDOW_MS", 250)
