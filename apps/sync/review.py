"""A supervisor's review of quarantined mutations: apply again what should stand.

A mutation is quarantined when it could not apply (a rule refused it, its writer had lost
access, its device was locked out). A supervisor of its program reads it, payload included,
and may apply it again as it was sent: it goes through the same path as a push, in the
order its device made its changes, under its writer's current permissions and against the
record as it is now (the three-way merge keeps a later colleague's edit; a collision
becomes a conflict). What still cannot apply is quarantined again, saying why. One the
server could not read as it was sent (a wrong op, an unknown key, a malformed time) stays
as it is: no review makes it applicable.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any
from uuid import UUID

from django.db import transaction
from django.db.models import Q

from apps.accounts.models import Device, User
from apps.audit.services import Accessor
from apps.common.api.errors import DomainError
from apps.sync import audit, push, selectors
from apps.sync.models import DismissCode, Mutation, MutationStatus
from apps.sync.services import lock_device

MAX_REVIEWED = 200


def apply_after_review(*, mutation_ids: list[int], reviewer: User, accessor: Accessor) -> list[dict[str, Any]]:
    """Apply these quarantined mutations again; returns each one's new result (a push's,
    with the ``quarantine_id`` asked for), in the order asked. Every id must be one the
    reviewer reviews (``quarantined_mutations_reviewable_by``): otherwise nothing is applied
    and the first other one is named."""
    _ensure_few_enough(mutation_ids)
    reviewable = set(
        selectors.quarantined_mutations_reviewable_by(user=reviewer)
        .filter(pk__in=mutation_ids)
        .values_list("pk", flat=True)
    )
    _ensure_all_among(mutation_ids, reviewable)
    by_device: dict[tuple[UUID, UUID], list[int]] = defaultdict(list)
    device_ids: set[UUID] = set()
    for mutation in Mutation.objects.filter(pk__in=mutation_ids).order_by("id"):
        device_ids.add(mutation.device_id)
        if not push.unreadable_as_sent(mutation):  # else it stays as it is, saying why
            by_device[(mutation.device_id, mutation.user_id)].append(mutation.pk)
    with transaction.atomic():
        _apply_again(mutation_ids, device_ids, by_device, accessor=accessor)
        rows = Mutation.objects.in_bulk(mutation_ids)
        # The reviewer's writes, in the transaction of their apply (P8): not kept without them.
        audit.record_ledger_writes(accessor=accessor, mutations=rows.values())
    results = [{**rows[pk].result, "quarantine_id": pk} for pk in mutation_ids]
    push.put_back_version_data(results)
    # The answer shows each record as it now stands, beyond what the reviewer read in the
    # quarantine: a read of it.
    audit.record_reads(accessor=accessor, records=((r["type"], r["id"]) for r in results if "data" in r))
    return results


# Why a change is set aside: a sentence, not a case note (sealed at rest).
DISMISS_REASON_MAX_LENGTH = 300


def dismiss_after_review(*, mutation_ids: list[int], reviewer: User, reason: str) -> None:
    """Set these quarantined mutations aside: reviewed, and not to be applied (a duplicate
    of what the crew re-entered online, a change made on the wrong person). Each stays in
    the ledger as it was sent, out of the reviewers' queue, and its writer sees who set it
    aside, when and why. Every id must be one the reviewer reviews, still kept: otherwise
    nothing is set aside and the first other one is named."""
    _ensure_few_enough(mutation_ids)
    if not reason.strip():
        raise DomainError("Say why the changes are set aside.", code="required", field="reason", status_code=400)
    if len(reason) > DISMISS_REASON_MAX_LENGTH:
        raise DomainError(
            f"Keep it to {DISMISS_REASON_MAX_LENGTH} characters.", code="max_length", field="reason", status_code=400
        )
    reviewable = set(
        selectors.quarantined_mutations_reviewable_by(user=reviewer)
        .filter(pk__in=mutation_ids)
        .values_list("pk", flat=True)
    )
    _ensure_all_among(mutation_ids, reviewable)
    device_ids = set(Mutation.objects.filter(pk__in=mutation_ids).values_list("device_id", flat=True))
    with transaction.atomic():
        for device_id in sorted(device_ids):  # the order of every review: no deadlock
            lock_device(device_id)
        # Checked again under the locks: another reviewer may have applied or set one aside.
        still_kept = Mutation.objects.filter(selectors.AWAITING_REVIEW, pk__in=mutation_ids)
        _ensure_all_among(mutation_ids, set(still_kept.values_list("pk", flat=True)))
        push.set_aside(still_kept, by=reviewer.pk, reason=reason, code=DismissCode.REVIEWED)


def _ensure_few_enough(mutation_ids: list[int]) -> None:
    # A review holds the locks of every device whose changes it takes, for as long as it
    # applies them: those devices' pushes wait. A selection of thousands in the admin would
    # hold a whole program's devices for minutes.
    if len(mutation_ids) > MAX_REVIEWED:
        raise DomainError(
            f"Review at most {MAX_REVIEWED} changes at once.", code="max_length", field="ids", status_code=400
        )


def _ensure_all_among(mutation_ids: list[int], found: set[int]) -> None:
    for position, mutation_id in enumerate(mutation_ids):
        if mutation_id not in found:
            raise DomainError(
                "No quarantined mutation with this id that you review.",
                code="not_found",
                field=f"ids.{position}",
                status_code=404,
            )


def _apply_again(
    mutation_ids: list[int],
    device_ids: set[UUID],
    by_device: dict[tuple[UUID, UUID], list[int]],
    *,
    accessor: Accessor,
) -> None:
    """Put the mutations back among their device's received ones and apply them with
    whatever else the device has waiting, in its order, as a push applies them.

    All under the devices' locks, in one transaction. Checked again under them: another
    reviewer may have applied one since the reviewable ones were read, and answering for it
    again would credit this reviewer with a write they did not make; or set one aside, and
    its writer was told it would never apply. Applied before anyone
    else sees them received: the device's own push or the sweep of stranded mutations would
    apply them as an ordinary write of the device, which the feed never sends back to it."""
    with transaction.atomic():
        for device_id in sorted(device_ids):  # one order for every reviewer: no deadlock
            lock_device(device_id)  # not while a push of the device applies
        still_kept = set(
            Mutation.objects.filter(selectors.AWAITING_REVIEW, pk__in=mutation_ids).values_list("pk", flat=True)
        )
        _ensure_all_among(mutation_ids, still_kept)
        # Their locks (their records', and those their types name for their writers: a
        # status time's unit board) before this transaction's first write, which dates its
        # changes in the feed (WrittenSinceTransactionBegan): with those of the devices'
        # waiting mutations, which apply with them, and of the changes their creates release.
        # The apply below takes the records' again (at once), not the types'. The reviewed
        # rows count as out of quarantine here as they will be there, so the changes found
        # released here are those the apply releases (or more, never fewer).
        applied_with = list(
            Mutation.objects.filter(
                Q(pk__in=mutation_ids) | Q(device_id__in=device_ids, status=MutationStatus.RECEIVED)
            ).only("device_id", "user_id", "record_type", "record_id", "operation", "payload")
        )
        released = push.children_waiting_on(applied_with, reviewed=frozenset(mutation_ids))
        push.lock_before_first_write([*applied_with, *released])
        for (device_id, user_id), pks in by_device.items():
            push.put_back_to_apply(Mutation.objects.filter(pk__in=pks))
            push.apply_received(
                device=Device.objects.get(pk=device_id),
                user=User.objects.get(pk=user_id),
                reviewed=frozenset(pks),
                reviewed_by=accessor,
                types_locked=True,
            )
