from __future__ import annotations

import uuid

from django.contrib.postgres.fields import ArrayField
from django.contrib.postgres.indexes import GinIndex
from django.db import models
from django.db.models.expressions import RawSQL

from apps.accounts.models import Device, Program, User
from apps.common.encryption import EncryptedTextField
from apps.sync.sealing import HealthJSONField, SealedJSONField


class ChangeOperation(models.TextChoices):
    UPSERT = "upsert", "Created or changed"
    REMOVE = "remove", "Removed from this scope (deleted, or no longer visible)"


class RemoveReason(models.TextChoices):
    DELETED = "deleted", "The record was deleted"
    OUT_OF_SCOPE = "out_of_scope", "The reader may no longer see the record"


class ChangeEntry(models.Model):
    """One change to a record, addressed to one scope (a unit, a user, a program's staff).

    The feed is ordered by (transaction_id, id). Entries are served only once every
    transaction that could still add an earlier entry has finished, so a pull from a
    cursor never skips a change that commits late (DESIGN.md P4).
    """

    id = models.BigAutoField(primary_key=True)
    # The writing transaction's 64-bit id (xid8 as bigint), assigned by PostgreSQL.
    transaction_id = models.BigIntegerField(db_default=RawSQL("pg_current_xact_id()::text::bigint", []))
    # Written only by the sync mechanism, in the transaction of a write to a record of this
    # program: no database constraint or index, whose checks on every entry of a push cost
    # more than the entry (a program is never deleted; if one were, the ORM cascades).
    program = models.ForeignKey(
        Program, on_delete=models.CASCADE, related_name="+", db_constraint=False, db_index=False
    )
    # A scope, or an audience of several (apps.sync.scopes.audience_of): a record's change
    # is one entry for everyone who sees it.
    scope = models.CharField(max_length=80)
    record_type = models.CharField(max_length=64)
    record_id = models.UUIDField()
    operation = models.CharField(max_length=8, choices=ChangeOperation.choices)
    data = HealthJSONField(default=dict)
    # The record's server version after this change (null for changes made outside the registry).
    version = models.PositiveIntegerField(null=True, blank=True)
    # For removals: deleted, or merely out of this scope's sight.
    reason = models.CharField(max_length=16, choices=RemoveReason.choices, blank=True)
    # Which device made the change, so its own writes are not sent back to it as news.
    origin_device_id = models.UUIDField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        indexes = [
            models.Index(fields=["scope", "transaction_id", "id"], name="change_entry_scope_order"),
            models.Index(fields=["transaction_id", "id"], name="change_entry_order"),
            # The records only the feed holds (dispatch's; no version): a change of access
            # finds each one's last word to a scope. Partial, so a push's entries skip it.
            models.Index(fields=["record_id"], condition=models.Q(version=None), name="change_entry_feed_only"),
        ]

    def __str__(self) -> str:
        return f"{self.record_type} {self.record_id} {self.operation} → {self.scope}"


class FeedRetention(models.Model):
    """How far back the feed still reaches: entries of older transactions were pruned.

    One row. A cursor from before ``pruned_below_transaction_id`` cannot be continued: the
    device re-bootstraps (HTTP 410, ``cursor_expired``).
    """

    id = models.PositiveSmallIntegerField(primary_key=True, default=1)
    pruned_below_transaction_id = models.BigIntegerField(default=0)
    pruned_at = models.DateTimeField(null=True, blank=True)

    def __str__(self) -> str:
        return f"feed pruned below transaction {self.pruned_below_transaction_id}"


class Audience(models.Model):
    """Several scopes addressed at once, under one key (``apps.sync.scopes.audience_of``).

    Written in the transaction of the first change addressed to it, never changed or
    deleted: a reader's audiences are its scopes and every audience that includes one.
    """

    key = models.CharField(max_length=80, primary_key=True)
    scopes = ArrayField(models.CharField(max_length=80))

    class Meta:
        indexes = [GinIndex(fields=["scopes"], name="audience_scopes")]

    def __str__(self) -> str:
        return ", ".join(self.scopes)


class SyncedRecord(models.Model):
    """The sync layer's head of one synced record: its version, its wire form, who sees it.

    Domain tables hold the record itself; this row is what the feed, the bootstrap snapshot
    and the three-way merge read, kept in step by ``apps.sync.services`` in the same
    transaction as every write of the record.
    """

    # Client-made UUIDs are unique across record types, so the record id alone is the key.
    record_id = models.UUIDField(primary_key=True)
    record_type = models.CharField(max_length=64)
    # Copied from the domain record it heads, in the same transaction: no constraint to check.
    # No index: heads are read by record and by audience, never by program.
    program = models.ForeignKey(
        Program, on_delete=models.CASCADE, related_name="+", db_constraint=False, db_index=False
    )
    version = models.PositiveIntegerField()
    data = HealthJSONField()
    scopes = ArrayField(models.CharField(max_length=80), default=list)
    # The audience of ``scopes``: the bootstrap snapshot walks records by audience, in key order.
    audience = models.CharField(max_length=80, default="")
    is_deleted = models.BooleanField(default=False)
    updated_at = models.DateTimeField(auto_now=True)
    # The transaction that published this version (pg_current_xact_id): a writer that took its
    # own transaction id earlier must not publish over it (WrittenSinceTransactionBegan). Null
    # for heads published before it was kept.
    written_in_transaction = models.BigIntegerField(null=True)

    class Meta:
        indexes = [models.Index(fields=["audience", "record_id"], name="synced_record_audience")]

    def __str__(self) -> str:
        return f"{self.record_type} {self.record_id} v{self.version}"


class RecordVersion(models.Model):
    """Every version of every synced record: the base of a three-way merge, and its history."""

    id = models.BigAutoField(primary_key=True)
    record_id = models.UUIDField()
    record_type = models.CharField(max_length=64)
    version = models.PositiveIntegerField()
    data = HealthJSONField()
    # The wire fields this version changed (what its writer meant to write).
    changed_fields = ArrayField(models.CharField(max_length=64), default=list)
    is_deleted = models.BooleanField(default=False)
    # Who wrote it, from where, by which mutation: history, written in the same transaction
    # as the ledger row and the record, so no database constraint or index to check per
    # version (users and devices are deactivated and revoked, never deleted).
    user = models.ForeignKey(
        User, null=True, on_delete=models.SET_NULL, related_name="+", db_constraint=False, db_index=False
    )
    device = models.ForeignKey(
        Device, null=True, on_delete=models.SET_NULL, related_name="+", db_constraint=False, db_index=False
    )
    mutation = models.ForeignKey(
        "Mutation", null=True, on_delete=models.SET_NULL, related_name="+", db_constraint=False, db_index=False
    )
    created_at = models.DateTimeField(auto_now_add=True)
    # Whether its writing device holds this version whole: when it pushed the change it had
    # pulled every earlier version, and the change merged cleanly. A client that never takes
    # the versions its own pushes made (WatermelonDB) edits this version next, while naming
    # an older base: the merge counts its later edits from here (sync.merge.held_version).
    held_by_writer = models.BooleanField(default=False, db_default=False)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["record_id", "version"], name="record_version_unique")]

    def __str__(self) -> str:
        return f"{self.record_type} {self.record_id} v{self.version}"


class MutationOperation(models.TextChoices):
    CREATE = "create", "Create"
    UPDATE = "update", "Update"
    DELETE = "delete", "Delete"


class MutationStatus(models.TextChoices):
    RECEIVED = "received", "Stored, not applied yet"
    APPLIED = "applied", "Applied"
    CONFLICT = "conflict", "Applied as far as it merged; the rest kept as a conflict"
    QUARANTINED = "quarantined", "Kept, not applied: needs a person"


class DismissCode(models.TextChoices):
    """Why a quarantined mutation was set aside (``Mutation.dismissed_at``)."""

    REVIEWED = "reviewed", "Set aside by a supervisor after review"
    SUPERSEDED = "superseded", "Set aside by the server: its device's later create of the record applied"


class Mutation(models.Model):
    """The mutation ledger: every client mutation, stored before it is applied.

    Keyed by (device, mutation_id): a retried or replayed mutation finds its row and gets
    its stored result back (DESIGN.md P2). Who, when and from which device is recorded on
    every row (P8).
    """

    id = models.BigAutoField(primary_key=True)
    # Found by device through the indexes below (its mutation ids, its content hashes, its
    # unapplied rows) and by user through its quarantined rows: an index of either alone
    # would only be written, twice per mutation (stored, then its result).
    device = models.ForeignKey(Device, on_delete=models.PROTECT, related_name="+", db_index=False)
    user = models.ForeignKey(User, on_delete=models.PROTECT, related_name="+", db_index=False)
    # The device's own increasing number; null for clients that cannot number their
    # changes (WatermelonDB), which are keyed by the content hash instead.
    mutation_id = models.BigIntegerField(null=True, blank=True)
    payload_hash = models.CharField(max_length=64)
    record_type = models.CharField(max_length=64, blank=True)
    record_id = models.UUIDField(null=True, blank=True)
    operation = models.CharField(max_length=8, blank=True)
    base_version = models.PositiveIntegerField(null=True, blank=True)
    payload = HealthJSONField(default=dict)
    observed_at = models.DateTimeField(null=True, blank=True)
    observed_at_plausible = models.BooleanField(default=True)
    client_version = models.CharField(max_length=100, blank=True)
    received_at = models.DateTimeField(auto_now_add=True)
    status = models.CharField(max_length=12, choices=MutationStatus.choices, default=MutationStatus.RECEIVED)
    result = HealthJSONField(default=dict)
    error_code = models.CharField(max_length=64, blank=True)
    applied_at = models.DateTimeField(null=True, blank=True)
    # Set on a quarantined mutation: the program whose supervisors review it (the writer may
    # be in several, or have left this one): its record's, or the unit's or parent record's
    # a refused create names. Null when it names nothing the server has.
    program = models.ForeignKey(
        Program, null=True, blank=True, on_delete=models.PROTECT, related_name="+", db_index=False
    )
    # Set when a quarantined mutation was set aside: it stays in quarantine, kept as sent, out
    # of the reviewers' queue; its writer sees who, when and why. A supervisor sets one aside
    # after review (by: the supervisor); the server sets aside a create its device superseded,
    # when that device's later create of the record applied (by: that create's writer).
    dismissed_at = models.DateTimeField(null=True, blank=True)
    dismissed_by = models.ForeignKey(
        User, null=True, blank=True, on_delete=models.PROTECT, related_name="+", db_index=False
    )
    # A sentence, which may name the person: sealed at rest like every reason. The database's
    # default fills it for the ledger's own INSERT, which names only the columns a push writes.
    dismiss_reason = EncryptedTextField(blank=True, default="", db_default="")
    # Why, for machines: DismissCode, or empty while it is not set aside.
    dismiss_code = models.CharField(max_length=16, choices=DismissCode.choices, blank=True, default="", db_default="")
    # For one set aside as superseded: the later create of its record that applied. Written
    # once, by the push that applied that create; ledger rows are never deleted, so no
    # constraint (whose check a new column of the ledger would scan the table for) or index.
    superseded_by = models.ForeignKey(
        "self", null=True, blank=True, on_delete=models.PROTECT, related_name="+", db_constraint=False, db_index=False
    )

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["device", "mutation_id"],
                condition=models.Q(mutation_id__isnull=False),
                name="mutation_unique_device_mutation_id",
            ),
            models.UniqueConstraint(
                fields=["device", "payload_hash"],
                condition=models.Q(mutation_id__isnull=True),
                name="mutation_unique_device_payload",
            ),
        ]
        indexes = [
            models.Index(
                fields=["device", "id"],
                condition=models.Q(status="received"),
                name="mutation_received",
            ),
            models.Index(
                fields=["user", "received_at"],
                condition=models.Q(status="quarantined"),
                name="mutation_quarantined",
            ),
            models.Index(
                fields=["program", "received_at"],
                condition=models.Q(status="quarantined"),
                name="mutation_quarantined_program",
            ),
            # A record's changes in quarantine: what a create sent again may release, looked up
            # for the records a push creates (push._ledger_position), and what waits with them.
            models.Index(
                fields=["record_id", "device"],
                condition=models.Q(status="quarantined"),
                name="mutation_quarantined_record",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.device_id}#{self.mutation_id} {self.status}"


class ConflictKind(models.TextChoices):
    SAME_FIELD = "same_field", "Both sides changed the same field"
    DELETE_VS_EDIT = "delete_vs_edit", "A delete met an edit the deleting device had not seen"
    EDIT_VS_DELETE = "edit_vs_delete", "An edit met a delete its device had not seen"


class Conflict(models.Model):
    """Two competing values of one field (or a delete against an edit), both kept for a person.

    The record keeps the server's value; the device's value waits here until a case manager
    resolves it (DESIGN.md P3).
    """

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    program = models.ForeignKey(Program, on_delete=models.CASCADE, related_name="+")
    record_type = models.CharField(max_length=64)
    record_id = models.UUIDField()
    kind = models.CharField(max_length=16, choices=ConflictKind.choices)
    field = models.CharField(max_length=64, blank=True)
    base_value = SealedJSONField(null=True)
    server_value = SealedJSONField(null=True)
    device_value = SealedJSONField(null=True)
    server_version = models.PositiveIntegerField()
    is_clinical_text = models.BooleanField(default=False)
    mutation = models.ForeignKey(Mutation, on_delete=models.PROTECT, related_name="conflicts")
    device = models.ForeignKey(Device, on_delete=models.PROTECT, related_name="+")
    user = models.ForeignKey(User, on_delete=models.PROTECT, related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)
    resolved_at = models.DateTimeField(null=True, blank=True)
    resolved_by = models.ForeignKey(User, null=True, blank=True, on_delete=models.PROTECT, related_name="+")
    resolution = models.CharField(max_length=200, blank=True)

    # Not stored: set on the conflict ``apps.sync.services.conflict_resolve`` returns, the
    # records its resolution wrote as (type, id, operation: create, update or delete) — the
    # conflict's own, a new one (an addendum to a note signed since), or those that moved
    # with it (an encounter's notes and referrals, moved back to the device's unit).
    written: tuple[tuple[str, uuid.UUID, str], ...] = ()

    class Meta:
        indexes = [
            models.Index(fields=["program", "created_at"], condition=models.Q(resolved_at=None), name="conflict_open"),
            models.Index(fields=["record_id"], name="conflict_record"),
        ]

    def __str__(self) -> str:
        return f"{self.kind} on {self.record_type} {self.record_id} {self.field}"

    @property
    def is_open(self) -> bool:
        return self.resolved_at is None


class UserScopeState(models.Model):
    """The scopes a user's devices were last served, to notice what the user has lost (P5)."""

    user = models.OneToOneField(User, primary_key=True, on_delete=models.CASCADE, related_name="+")
    scopes = ArrayField(models.CharField(max_length=80), default=list)
    updated_at = models.DateTimeField(auto_now=True)

    def __str__(self) -> str:
        return f"scopes of {self.user_id}"


class ScopeChange(models.Model):
    """A scope a user gained or lost, at a place in the feed's order (P5).

    A reader reads a scope's entries only from where it gained the scope until where it lost
    it: entries addressed to a unit before its new member joined are not theirs (the join's
    catch-up gives them the unit's records as they stand), and a removal addressed to a unit
    its member left later is still theirs.
    """

    id = models.BigAutoField(primary_key=True)
    user = models.ForeignKey(User, on_delete=models.CASCADE, related_name="+", db_index=False)
    scope = models.CharField(max_length=80)
    gained = models.BooleanField()
    # The changing transaction's id, as the feed's entries carry theirs.
    transaction_id = models.BigIntegerField(db_default=RawSQL("pg_current_xact_id()::text::bigint", []))
    # For a gain: the transactions the change's catch-up did not see, whose entries the user
    # reads — those from ``unseen_from`` on, and those still running then (``unseen``). A
    # younger transaction that committed before the catch-up is in it: its entries are not
    # served (a record that passed through the unit before the join is never shown).
    unseen_from = models.BigIntegerField(null=True, blank=True)
    unseen = ArrayField(models.BigIntegerField(), default=list, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        indexes = [models.Index(fields=["user", "transaction_id"], name="scope_change_user_order")]

    def __str__(self) -> str:
        return f"{self.user_id} {'gained' if self.gained else 'lost'} {self.scope}"


class IssuedCursor(models.Model):
    """A feed position behind a plain number, for clients whose cursor must be a number
    (WatermelonDB's ``lastPulledAt``): the feed's cursor, or a snapshot's part way through a
    first sync or an app's schema migration (``apps.sync.watermelon``)."""

    id = models.BigAutoField(primary_key=True)
    device = models.ForeignKey(Device, on_delete=models.CASCADE, related_name="+")
    # A snapshot cursor names an audience key besides its feed position; a migration's holds
    # a snapshot cursor and the position it goes on from: text of no set length.
    position = models.TextField()
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)  # pruned with the feed

    def __str__(self) -> str:
        return f"cursor {self.id} of {self.device_id}"
