from __future__ import annotations

import json
from typing import Any

from django.db.models import QuerySet
from django.http import HttpResponse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from apps.accounts.authentication import ensure_still_authenticated
from apps.accounts.models import DeviceToken, User
from apps.accounts.selectors import lockout_of
from apps.audit.models import AccessChannel
from apps.audit.services import Accessor
from apps.common.api.errors import DomainError, error_body
from apps.sync import audit, conf, push, review, selectors, services, watermelon
from apps.sync.api.protocol import PROTOCOL_HEADER, client_version_of, protocol_of
from apps.sync.api.serializers import (
    ConflictPageSerializer,
    ConflictSerializer,
    DismissedMutationsSerializer,
    FeedPageSerializer,
    FeedQuerySerializer,
    ListQuerySerializer,
    PushInputSerializer,
    PushOutputSerializer,
    PushPositionSerializer,
    QuarantinedMutationSerializer,
    QuarantinePageSerializer,
    ReviewedMutationsSerializer,
    SnapshotPageSerializer,
    SnapshotQuerySerializer,
    WatermelonPullQuerySerializer,
)
from apps.sync.selectors import ListedModel

_PROTOCOL_PARAMETER = OpenApiParameter(
    PROTOCOL_HEADER, location=OpenApiParameter.HEADER, required=False, type=int, description="Sync protocol (2)."
)


def _answers(ok: Any) -> dict[int, Any]:
    """The responses of a view that reads the protocol header: its answer, or 426."""
    unsupported = OpenApiResponse(
        response=OpenApiTypes.OBJECT,
        description="This sync protocol is not supported; `supported_protocols` lists those that are.",
    )
    return {200: ok, 426: unsupported}


def _device_auth(request: Request) -> tuple[User, DeviceToken]:
    assert isinstance(request.user, User) and isinstance(request.auth, DeviceToken)
    return request.user, request.auth


def _accessor(request: Request) -> Accessor:
    return Accessor.from_request(request, AccessChannel.SYNC)


def cursor_error(error: selectors.InvalidCursor, field: str = "cursor") -> DomainError:
    if isinstance(error, selectors.CursorExpired):
        # A database restored from a backup may have lost versions the device's outbox names
        # as its bases, and given their numbers to others since: the device pushes it without.
        return DomainError(
            str(error),
            code="cursor_expired",
            field=field,
            status_code=status.HTTP_410_GONE,
            extra_body={"database_restored": isinstance(error, selectors.CursorAhead)},
        )
    return DomainError(str(error), code="invalid_cursor", field=field, status_code=400)


class FeedView(APIView):
    """Pull the change feed of everything this device's user may see, from a cursor.

    Start with no cursor (or from a snapshot's `feed_cursor`); keep the returned cursor and
    send it back. `has_more` means pull again at once. Entries are in server order; apply
    them in order. 410 `cursor_expired`: bootstrap again from the snapshot, keeping the outbox.
    """

    @extend_schema(parameters=[FeedQuerySerializer, _PROTOCOL_PARAMETER], responses=_answers(FeedPageSerializer))
    def get(self, request: Request) -> Response:
        user, token = _device_auth(request)
        protocol = protocol_of(request)
        query = FeedQuerySerializer(data=request.query_params)
        query.is_valid(raise_exception=True)
        scopes = services.user_scopes_refresh(user=user)
        try:
            page = selectors.feed_page(
                scopes=scopes,
                cursor=query.validated_data.get("cursor"),
                limit=query.validated_data["limit"],
                reader_device_id=token.device_id,
                user_id=user.pk,
            )
        except selectors.InvalidCursor as error:
            raise cursor_error(error) from error
        ensure_still_authenticated(request)
        entries = [selectors.entry_as_message(entry, token.device_id) for entry in page.entries]
        audit.record_reads(
            accessor=_accessor(request),
            records=((entry["type"], entry["id"]) for entry in entries if entry["op"] == "upsert"),
        )
        if protocol < 2:
            for entry in entries:  # version 1 clients know only the first shape
                entry.pop("version", None)
                entry.pop("reason", None)
        return Response(
            {"entries": entries, "cursor": page.position.encode(token.device_id), "has_more": page.has_more}
        )


class SnapshotView(APIView):
    """First sync: every live record this device's user may see, page by page.

    Send the returned `cursor` back until `has_more` is false; the last page carries
    `feed_cursor`, where the feed continues (nothing committed meanwhile is missed).
    """

    @extend_schema(
        parameters=[SnapshotQuerySerializer, _PROTOCOL_PARAMETER], responses=_answers(SnapshotPageSerializer)
    )
    def get(self, request: Request) -> HttpResponse:
        user, token = _device_auth(request)
        protocol_of(request, minimum=2)
        query = SnapshotQuerySerializer(data=request.query_params)
        query.is_valid(raise_exception=True)
        scopes = services.user_scopes_refresh(user=user)
        try:
            page = selectors.snapshot_page(
                scopes=scopes,
                cursor=query.validated_data.get("cursor") or None,
                reader_device_id=token.device_id,
                limit=query.validated_data["limit"],
                user_id=user.pk,
            )
        except selectors.InvalidCursor as error:
            raise cursor_error(error) from error
        ensure_still_authenticated(request)
        audit.record_reads(
            accessor=_accessor(request), records=((record_type, record_id) for record_type, record_id, *_ in page.rows)
        )
        # The records' JSON goes out as stored, never parsed: a 50,000-record first sync
        # costs the server little more than the bytes.
        parts = [
            f'{{"type":{json.dumps(record_type)},"id":"{record_id}","version":{int(version)},"data":{data}}}'
            for record_type, record_id, version, data in page.rows
        ]
        has_more = "true" if page.cursor else "false"
        body = (
            f'{{"records":[{",".join(parts)}],"cursor":{json.dumps(page.cursor)},'
            f'"has_more":{has_more},"feed_cursor":{json.dumps(page.feed_cursor)}}}'
        )
        return HttpResponse(body, content_type="application/json")


class PushView(APIView):
    """Push a batch of mutations; each gets its own result (see the protocol documentation).

    200 with per-mutation results whenever the batch was read: content errors are results,
    not request errors. 5xx: nothing is lost, retry the same batch. GET tells the device the
    highest mutation id stored for it: where its numbering continues. A revoked device, or
    one whose user was deactivated, may still push what it holds: it is all quarantined
    (`device_revoked` / `user_deactivated`) for a supervisor, and none of it applies.
    """

    takes_outbox_handover = True  # see DeviceTokenAuthentication

    @extend_schema(responses=PushPositionSerializer)
    def get(self, request: Request) -> Response:
        _user, token = _device_auth(request)
        return Response({"last_mutation_id": selectors.last_mutation_id(device_id=token.device_id)})

    @extend_schema(
        request=PushInputSerializer, parameters=[_PROTOCOL_PARAMETER], responses=_answers(PushOutputSerializer)
    )
    def post(self, request: Request) -> Response:
        user, token = _device_auth(request)
        protocol_of(request, minimum=2)
        try:
            mutations = _mutations_of(request.data)
        except BatchTooLarge as error:
            return batch_too_large_response(error)
        answer = push.push_mutations(
            device=token.device,
            user=user,
            mutations=mutations,
            client_version=client_version_of(request),
            lockout=lockout_of(token),
            accessor=_accessor(request),
        )
        audit.record_replayed_reads(accessor=_accessor(request), results=answer.results)
        return Response({"results": answer.results, "released": answer.released})


def _mutations_of(body: Any) -> list[Any]:
    if not isinstance(body, dict) or not isinstance(body.get("mutations"), list):
        raise DomainError('The body is {"mutations": [...]}.', code="invalid_input", field="mutations", status_code=400)
    unknown = sorted(set(body) - {"mutations"})
    if unknown:
        raise DomainError("Unknown field.", code="unknown_field", field=unknown[0], status_code=400)
    mutations: list[Any] = body["mutations"]
    if len(mutations) > conf.PUSH_MAX_MUTATIONS:
        raise BatchTooLarge(len(mutations))
    return mutations


class BatchTooLarge(DomainError):
    def __init__(self, size: int) -> None:
        super().__init__(
            f"A push carries at most {conf.PUSH_MAX_MUTATIONS} mutations; this one has {size}. "
            "Split it and send the parts in order.",
            code="batch_too_large",
            field="mutations",
            status_code=status.HTTP_413_REQUEST_ENTITY_TOO_LARGE,
        )


def batch_too_large_response(error: BatchTooLarge) -> Response:
    body = error_body(
        error.status_code,
        error.code,
        error.detail,
        [{"field": error.field, "code": error.code, "detail": error.detail}],
    )
    body["limit"] = conf.PUSH_MAX_MUTATIONS
    return Response(body, status=error.status_code)


def _page_answer(page: selectors.ListPage[Any], serializer_class: Any) -> Response:
    results = serializer_class(page.items, many=True).data
    return Response({"results": results, "has_more": page.has_more, "cursor": page.cursor})


def _newest_first_page(
    request: Request, rows: QuerySet[ListedModel], *, time_field: str
) -> selectors.ListPage[ListedModel]:
    query = ListQuerySerializer(data=request.query_params)
    query.is_valid(raise_exception=True)
    try:
        return selectors.newest_first_page(
            rows, time_field=time_field, cursor=query.validated_data.get("cursor"), limit=query.validated_data["limit"]
        )
    except selectors.InvalidCursor as error:
        raise cursor_error(error) from error


class QuarantineView(APIView):
    """Mutations kept but not applied: your own, and, for supervisors, everyone's in their
    programs. Newest first, 200 a page (`?limit=`); while `has_more`, ask again with `?cursor=`."""

    @extend_schema(parameters=[ListQuerySerializer], responses=QuarantinePageSerializer)
    def get(self, request: Request) -> Response:
        user, _token = _device_auth(request)
        mutations = selectors.quarantined_mutations_visible_to(user=user)
        page = _newest_first_page(request, mutations, time_field="received_at")
        audit.record_kept_copy_reads(accessor=_accessor(request), kept=page.items)
        return _page_answer(page, QuarantinedMutationSerializer)


class QuarantineApplyView(APIView):
    """Apply again quarantined mutations you review as a supervisor (`{"ids": [...]}`, at
    most 200): in their device's order, under their writer's current permissions, merged
    with the record as it is now. Each answers its new result; what still cannot apply is
    quarantined again, saying why. An id you do not review: 404 naming it, nothing applied."""

    @extend_schema(request=ReviewedMutationsSerializer, responses=dict)
    def post(self, request: Request) -> Response:
        user, _token = _device_auth(request)
        body = ReviewedMutationsSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        results = review.apply_after_review(
            mutation_ids=body.validated_data["ids"], reviewer=user, accessor=_accessor(request)
        )
        return Response({"results": results})


class QuarantineDismissView(APIView):
    """Set aside quarantined mutations you review as a supervisor, saying why
    (`{"ids": [...], "reason": "..."}`, at most 200): reviewed, never to be applied, kept as
    sent; their writer sees who, when and why. An id you do not review, or one already
    applied or set aside: 404 naming it, nothing set aside."""

    @extend_schema(request=DismissedMutationsSerializer, responses={204: None})
    def post(self, request: Request) -> Response:
        user, _token = _device_auth(request)
        body = DismissedMutationsSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        review.dismiss_after_review(
            mutation_ids=body.validated_data["ids"], reviewer=user, reason=body.validated_data["reason"]
        )
        return Response(status=status.HTTP_204_NO_CONTENT)


class ConflictListView(APIView):
    """Open conflicts: your own, and, for case managers and supervisors, their programs'.
    Newest first, 200 a page (`?limit=`); while `has_more`, ask again with `?cursor=`."""

    @extend_schema(parameters=[ListQuerySerializer], responses=ConflictPageSerializer)
    def get(self, request: Request) -> Response:
        user, _token = _device_auth(request)
        page = _newest_first_page(request, selectors.open_conflicts_visible_to(user=user), time_field="created_at")
        audit.record_kept_copy_reads(accessor=_accessor(request), kept=page.items)
        return _page_answer(page, ConflictSerializer)


class WatermelonPullView(APIView):
    """WatermelonDB `pullChanges`: `?last_pulled_at=<timestamp or empty>`.

    Answers `{"changes": {...}, "timestamp": n, "has_more": b}` (while `has_more`, sync
    again); every upsert is under `updated` (use `sendCreatedAsUpdated: true`); clinical
    removals are `updated` rows with `deleted: true`.
    410 `cursor_expired`: reset the local database and sync again (push the outbox first).
    """

    @extend_schema(parameters=[_PROTOCOL_PARAMETER, WatermelonPullQuerySerializer], responses=_answers(dict))
    def get(self, request: Request) -> Response:
        user, token = _device_auth(request)
        protocol_of(request, minimum=2)
        WatermelonPullQuerySerializer(data=request.query_params).is_valid(raise_exception=True)
        try:
            last_pulled_at = watermelon.parse_last_pulled_at(request.query_params.get("last_pulled_at") or "")
        except watermelon.InvalidTimestamp as error:
            raise DomainError(str(error), code="invalid_cursor", field="last_pulled_at", status_code=400) from error
        try:
            migrated_types = watermelon.parse_migration(request.query_params.get("migration") or "")
        except watermelon.InvalidMigration as error:
            raise DomainError(str(error), code="invalid", field="migration", status_code=400) from error
        scopes = services.user_scopes_refresh(user=user)
        try:
            body = watermelon.pull(
                device=token.device, scopes=scopes, last_pulled_at=last_pulled_at, migrated_types=migrated_types
            )
        except selectors.InvalidCursor as error:
            raise cursor_error(error, field="last_pulled_at") from error
        ensure_still_authenticated(request)
        audit.record_reads(accessor=_accessor(request), records=audit.watermelon_records(body["changes"]))
        return Response(body)


class WatermelonPushView(APIView):
    """WatermelonDB `pushChanges`: body `{"changes": {...}, "lastPulledAt": n}`.

    Always 200 once the body is read: refused records are listed in
    `experimentalRejectedIds` (kept in quarantine) and the others apply. A locked-out
    device's records are all kept in quarantine, as over the other push.
    """

    takes_outbox_handover = True  # see DeviceTokenAuthentication

    @extend_schema(request=dict, parameters=[_PROTOCOL_PARAMETER], responses=_answers(dict))
    def post(self, request: Request) -> Response:
        user, token = _device_auth(request)
        protocol_of(request, minimum=2)
        try:
            changes = watermelon.push_body_changes(request.data)
            count = watermelon.change_count(changes)
            if count > conf.PUSH_MAX_MUTATIONS:
                return batch_too_large_response(BatchTooLarge(count))
            answer = watermelon.push_changes(
                device=token.device,
                user=user,
                changes=changes,
                client_version=client_version_of(request),
                lockout=lockout_of(token),
                accessor=_accessor(request),
                last_pulled_at=request.data.get("lastPulledAt"),
            )
        except watermelon.InvalidChanges as error:
            raise DomainError(str(error), code=error.code, field=error.field, status_code=400) from error
        audit.record_replayed_reads(accessor=_accessor(request), results=answer["results"])
        return Response(answer)
