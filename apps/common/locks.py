"""Keys of PostgreSQL's transaction-scoped advisory locks on ids.

An advisory lock is one 64-bit number for the whole database, so each kind of lock (a
device's push, a record, a unit's board) needs keys that ids of another kind cannot reach.
Clients choose record ids: a key made of an id's own bits could be aimed at a unit's board,
and a push would then wait on (or deadlock with) a dispatcher's. A hash of the namespace and
the whole id cannot be aimed at anything short of a search of 2**64 ids.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from uuid import UUID

from django.db import connection


def advisory_lock_key(namespace: bytes, value: UUID) -> int:
    """The signed 64-bit key (PostgreSQL's bigint) of ``value``'s lock in ``namespace``
    (at most 16 bytes, one per kind of lock)."""
    digest = hashlib.blake2b(value.bytes, digest_size=8, person=namespace).digest()
    return int.from_bytes(digest, "big", signed=True)


def lock_in_order(namespace: bytes, values: Iterable[UUID]) -> None:
    """Hold the locks of ``values`` in ``namespace`` until the transaction ends, taken in one
    statement in the keys' order: two transactions locking sets that overlap never deadlock.
    Each waits, for as long as it takes, for a lock another transaction holds."""
    keys = sorted({advisory_lock_key(namespace, value) for value in values})
    if not keys:
        return
    assert connection.in_atomic_block, "transaction-scoped locks need a transaction"
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(pg_advisory_xact_lock(key)) FROM (SELECT unnest(%s::bigint[]) AS key ORDER BY 1) AS keys",
            [keys],
        )
