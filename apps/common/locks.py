"""Keys of PostgreSQL's transaction-scoped advisory locks on ids.

An advisory lock is one 64-bit number for the whole database, so each kind of lock (a
device's push, a record, a unit's board) needs keys that ids of another kind cannot reach.
Clients choose record ids: a key made of an id's own bits could be aimed at a unit's board,
and a push would then wait on (or deadlock with) a dispatcher's. A hash of the namespace and
the whole id cannot be aimed at anything short of a search of 2**64 ids.
"""

from __future__ import annotations

import hashlib
from uuid import UUID


def advisory_lock_key(namespace: bytes, value: UUID) -> int:
    """The signed 64-bit key (PostgreSQL's bigint) of ``value``'s lock in ``namespace``
    (at most 16 bytes, one per kind of lock)."""
    digest = hashlib.blake2b(value.bytes, digest_size=8, person=namespace).digest()
    return int.from_bytes(digest, "big", signed=True)
