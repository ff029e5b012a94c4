"""Reads of the change feed: complete, ordered pages from a cursor."""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from typing import Any
from uuid import UUID

from django.db.models import F, Q, QuerySet
from django.db.models.expressions import RawSQL

from apps.sync.models import ChangeEntry

# Every transaction with an id below this one has finished: entries written by them are
# all visible now, and no later transaction can add more below it.
_OLDEST_RUNNING_TRANSACTION = RawSQL("pg_snapshot_xmin(pg_current_snapshot())::text::bigint", [])


class InvalidCursor(ValueError):
    pass


@dataclass(frozen=True, order=True)
class FeedPosition:
    transaction_id: int
    entry_id: int

    def encode(self) -> str:
        return base64.urlsafe_b64encode(f"{self.transaction_id}.{self.entry_id}".encode()).decode().rstrip("=")

    @classmethod
    def decode(cls, cursor: str | None) -> FeedPosition:
        if not cursor:
            return cls(0, 0)
        try:
            raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
            transaction_id, entry_id = (int(part) for part in raw.split("."))
        except (binascii.Error, UnicodeDecodeError, ValueError) as error:
            raise InvalidCursor("Not a cursor this server issued.") from error
        if transaction_id < 0 or entry_id < 0:
            raise InvalidCursor("Not a cursor this server issued.")
        return cls(transaction_id, entry_id)

    @classmethod
    def of(cls, entry: ChangeEntry) -> FeedPosition:
        return cls(entry.transaction_id, entry.id)


@dataclass(frozen=True)
class FeedPage:
    entries: list[ChangeEntry]
    position: FeedPosition
    has_more: bool
    # Changes already committed but not yet servable, because an older transaction is still
    # running: pull again shortly.
    held_back: bool


def _after(position: FeedPosition) -> Q:
    return Q(transaction_id__gt=position.transaction_id) | Q(
        transaction_id=position.transaction_id, id__gt=position.entry_id
    )


def _servable(scopes: list[str]) -> QuerySet[ChangeEntry]:
    return (
        ChangeEntry.objects.filter(scope__in=scopes)
        .alias(horizon=_OLDEST_RUNNING_TRANSACTION)
        .filter(transaction_id__lt=F("horizon"))
    )


def feed_page(
    *, scopes: list[str], cursor: str | None, limit: int = 200, reader_device_id: UUID | None = None
) -> FeedPage:
    """The next entries for these scopes after the cursor, in feed order.

    A device's own writes are skipped (it has them already); the cursor still moves past them.
    """
    position = FeedPosition.decode(cursor)
    rows = list(_servable(scopes).filter(_after(position)).order_by("transaction_id", "id")[: limit + 1])
    has_more = len(rows) > limit
    rows = rows[:limit]
    if rows:
        position = FeedPosition.of(rows[-1])
    entries = [row for row in rows if reader_device_id is None or row.origin_device_id != reader_device_id]
    held_back = not has_more and _has_held_back(scopes)
    return FeedPage(entries=entries, position=position, has_more=has_more, held_back=held_back)


def _has_held_back(scopes: list[str]) -> bool:
    return (
        ChangeEntry.objects.filter(scope__in=scopes)
        .alias(horizon=_OLDEST_RUNNING_TRANSACTION)
        .filter(transaction_id__gte=F("horizon"))
        .exists()
    )


def entry_as_message(entry: ChangeEntry) -> dict[str, Any]:
    """The wire form of an entry, the same over HTTP and the websocket."""
    return {
        "cursor": FeedPosition.of(entry).encode(),
        "type": entry.record_type,
        "id": str(entry.record_id),
        "op": entry.operation,
        "data": entry.data,
        "changed_at": entry.created_at.isoformat(),
    }
