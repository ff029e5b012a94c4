"""Every route and every websocket message, tried by people who must not reach the program's records.

The table below names, for each route found by walking the URL resolver (and each message
type a domain app registered with the websocket), what a dispatcher of another program
(``foreign``) and a crew member of another unit of the same program (``outsider``) get
when they aim it at the program's records: 404 (it does not exist for them), 403 (a
collection-level action their role cannot do), or 2xx with nothing of the program in the
answer. After each route the database is compared with its state before: nothing changed.

A new route or message type without a row here fails the test: decide who may use it, then
add the row.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

import pytest
from django.db import connection
from django.urls import URLPattern, URLResolver, get_resolver, reverse
from rest_framework.test import APIClient

from apps.accounts.models import Device, DeviceToken, Program, Role
from apps.audit.models import AuditEvent
from apps.directory.models import Service
from apps.dispatch import services as dispatch
from apps.notifications.services import notify
from apps.realtime.handlers import HandlerError, handler_for, registered_types
from apps.sync.models import Mutation
from tests.care.factories import pushed
from tests.conftest import CrewMember
from tests.dispatch.factories import intake_body, make_incident, make_staff, seed_default_triage_policy
from tests.followups.factories import referral, steps_of
from tests.sync.helpers import PROTOCOL, now_iso

pytestmark = pytest.mark.django_db

FOREIGN, OUTSIDER, ANONYMOUS = "foreign", "outsider", "anonymous"
NO_DATA = 2  # "2xx": allowed, but the answer holds nothing of the program
HEALTH = 5  # 200 or 503 (no worker answers in this test): public, and holds nothing of the program


@dataclass(frozen=True)
class Try:
    """One attempt: who, the status expected, and the body or query sent."""

    actor: str
    status: int
    body: dict[str, Any] | str | None = None  # a dict, or the name of a body builder
    query: dict[str, str] = field(default_factory=dict)


def both(status: int, body: dict[str, Any] | str | None = None, **query: str) -> list[Try]:
    return [Try(FOREIGN, status, body, query), Try(OUTSIDER, status, body, query)]


def split(foreign: int, outsider: int, body: dict[str, Any] | str | None = None, **query: str) -> list[Try]:
    return [Try(FOREIGN, foreign, body, query), Try(OUTSIDER, outsider, body, query)]


# (route name, HTTP method) → attempts. Path parameters are filled with the program's records.
MATRIX: dict[tuple[str, str], list[Try]] = {
    # Public: describe, never disclose.
    ("healthz", "GET"): [Try(ANONYMOUS, HEALTH)],
    # The API's description: for signed-in devices (and staff), the same for every program.
    ("schema", "GET"): both(NO_DATA),
    ("api-docs", "GET"): both(NO_DATA),
    # Accounts: one's own devices; the program's devices for its supervisors only.
    ("device-register", "POST"): [
        Try(ANONYMOUS, 401, {"username": "crew", "password": "wrong", "device_name": "x", "platform": "ios"})
    ],
    ("token-rotate", "POST"): both(201, {}),  # the caller's own token: allowed, touches nothing else
    ("me", "GET"): both(NO_DATA),
    ("device-list", "GET"): both(NO_DATA),
    ("device-revoke", "POST"): both(404, {}),
    ("program-device-list", "GET"): split(404, 403),
    ("program-device-revoke", "POST"): split(404, 403, {}),
    # Teams: a crew sees its own units; the program's zones are shared within the program.
    ("unit-list", "GET"): both(NO_DATA),
    ("unit-detail", "GET"): both(404),
    ("zone-list", "GET"): both(NO_DATA),
    # Sync: each device's own scope.
    ("sync-feed", "GET"): both(NO_DATA),
    ("sync-snapshot", "GET"): both(NO_DATA),
    ("sync-push", "GET"): both(NO_DATA),
    ("sync-push", "POST"): both(NO_DATA, {"mutations": []}),
    ("sync-quarantine", "GET"): both(NO_DATA),
    ("sync-quarantine-apply", "POST"): both(404, {"ids": ["quarantined_number"]}),
    ("sync-quarantine-dismiss", "POST"): both(404, {"ids": ["quarantined_number"], "reason": "Duplicate"}),
    ("sync-conflicts", "GET"): both(NO_DATA),
    ("sync-watermelon-pull", "GET"): both(NO_DATA),
    ("sync-watermelon-push", "POST"): both(NO_DATA, {"changes": {}}),
    # Notifications: one's own; delivery summaries for the program's staff.
    ("notification-list", "GET"): both(NO_DATA),
    ("notification-receipts", "POST"): both(404, {"status": "opened"}),
    ("notification-delivery", "GET"): both(404),
    ("push-registration", "POST"): both(201, {"provider": "fcm", "token": "own-device-push-token"}),
    ("push-registration-delete", "DELETE"): both(204),
    ("push-config", "GET"): both(NO_DATA),
    ("twilio-status", "POST"): [Try(ANONYMOUS, 403, {"MessageSid": "SM1", "MessageStatus": "delivered"})],
    ("twilio-inbound", "POST"): [Try(ANONYMOUS, 403, {"From": "+12125550100", "Body": "STOP"})],
    # Dispatch: the program's dispatchers and supervisors; crews through their assignments.
    ("incident-list", "GET"): both(NO_DATA),
    ("incident-list", "POST"): both(404, "intake"),
    ("incident-detail", "GET"): both(404),
    ("incident-override", "POST"): both(404, {"response": "police", "reason": "x"}),
    ("incident-close", "POST"): both(404, {"unserved_reason": "other", "note": "x"}),
    ("incident-recommended-units", "GET"): both(404),
    ("incident-offer", "POST"): both(404, {"unit": "unit_id"}),
    ("unit-board", "GET"): split(404, 404, program="program"),
    ("unit-availability", "POST"): both(404, {"status": "out_of_service"}),
    ("assignment-list", "GET"): both(NO_DATA),
    ("assignment-detail", "GET"): both(404),
    ("assignment-acknowledge", "POST"): both(404, {}),
    ("assignment-status", "POST"): both(404, {"status": "en_route", "event_id": "new_uuid"}),
    ("assignment-decline", "POST"): both(404, {"reason": "x"}),
    ("assignment-check-in", "POST"): both(404, {}),
    ("assignment-cancel", "POST"): both(404, {"reason": "x"}),
    # Care: referrals of the program (case managers) or of the crew's unit.
    ("referral-detail", "GET"): both(404),
    ("referral-status", "POST"): both(404, {"status": "received"}),
    ("referral-outcomes", "POST"): both(404, {"outcome": "connected", "observed_at": "now"}),
    # Directory: program-wide; another program's entries do not exist.
    ("directory-services", "GET"): both(NO_DATA),
    ("directory-service", "GET"): split(404, 200),
    ("directory-capacity", "POST"): split(404, 403, {"available": 1}),
    # Follow-ups: the program's case managers, the crew of the encounter's unit.
    ("followup-steps", "GET"): both(NO_DATA),
    ("followup-step", "GET"): both(404),
    ("followup-attempts", "POST"): both(404, {"method": "phone", "result": "reached", "attempted_at": "now"}),
    ("followup-complete", "POST"): both(404, {}),
    ("followup-reschedule", "POST"): both(404, {"due_at": "now", "reason": "x"}),
    ("followup-missed", "POST"): both(404, {"reason": "x"}),
    ("followup-assign", "POST"): both(404, {"owner": "crew_user"}),
}
# Routes whose success changes the caller's own rows: its token, its push registration, the
# scopes its devices were last served (to notice what it loses), the cursor it was issued.
CHANGES_OWN_ROWS: dict[tuple[str, str], set[str]] = {
    ("token-rotate", "POST"): {"accounts_devicetoken"},
    ("push-registration", "POST"): {"notifications_pushregistration"},
    ("push-registration-delete", "DELETE"): {"notifications_pushregistration"},
    ("sync-feed", "GET"): {"sync_userscopestate"},
    ("sync-snapshot", "GET"): {"sync_userscopestate"},
    ("sync-watermelon-pull", "GET"): {"sync_userscopestate", "sync_issuedcursor"},
}
# Webhooks that providers post as a form.
FORM_POSTS = {"twilio-status", "twilio-inbound"}

FUNCTION_VIEW_METHODS = {"healthz": ("GET",)}

# Websocket messages answered by domain apps → the error code each outsider gets.
MESSAGES: dict[str, dict[str, Any]] = {
    "assignment.acknowledge": {"message": {"assignment": "assignment_id"}, "code": "not_found"},
    "assignment.check_in": {"message": {"assignment": "assignment_id"}, "code": "not_found"},
    "notification.receipt": {"message": {"id": "notification_id", "status": "opened"}, "code": "not_found"},
}


# ---------------------------------------------------------------------------------------------
# Walking the routes


def routes() -> Iterator[tuple[str, str, URLPattern]]:
    """(name, method, pattern) of every named route outside the Django admin."""

    def walk(patterns: list[Any], prefix: str) -> Iterator[tuple[str, URLPattern]]:
        for pattern in patterns:
            if isinstance(pattern, URLResolver):
                if pattern.app_name == "admin":
                    continue  # the admin has its own outsider test (tests/workspace/test_admin.py)
                yield from walk(pattern.url_patterns, prefix + str(pattern.pattern))
            elif isinstance(pattern, URLPattern):
                yield prefix + str(pattern.pattern), pattern

    for _route, pattern in walk(get_resolver().url_patterns, ""):
        assert pattern.name, f"every route has a name: {_route}"
        view_class = getattr(pattern.callback, "view_class", None) or getattr(pattern.callback, "cls", None)
        if view_class is None:
            # A function view says nothing of its methods: they are listed here by hand.
            assert pattern.name in FUNCTION_VIEW_METHODS, f"{pattern.name}: list its methods in FUNCTION_VIEW_METHODS"
            for method in FUNCTION_VIEW_METHODS[pattern.name]:
                yield pattern.name, method, pattern
            continue
        for method in ("get", "post", "put", "patch", "delete"):
            if hasattr(view_class, method):
                yield pattern.name, method.upper(), pattern


def test_the_matrix_names_every_route_and_every_message_type() -> None:
    found = {(name, method) for name, method, _pattern in routes()}
    assert set(MATRIX) == found, {"without a row": found - set(MATRIX), "no such route": set(MATRIX) - found}
    assert all(MATRIX[key] for key in MATRIX), [key for key in MATRIX if not MATRIX[key]]
    assert set(MESSAGES) == registered_types()


# ---------------------------------------------------------------------------------------------
# The program's records


@dataclass
class World:
    program: Program
    crew: CrewMember
    kwargs: dict[str, str]
    # Strings that must not appear in an answer to someone outside (ids, clinical text, numbers).
    secrets: dict[str, set[str]]


def build_world(program: Program, crew: CrewMember) -> World:
    seed_default_triage_policy()
    dispatcher = make_staff(program, Role.DISPATCHER)
    supervisor = make_staff(program, Role.SUPERVISOR)
    incident = make_incident(
        program, dispatcher, nature="Caller says her son stopped taking lithium", callback_number="+12125550199"
    )
    assignment = dispatch.assignment_offer(incident=incident, unit=crew.unit, actor=dispatcher.user)
    referral_id = referral(crew, encounter_fields={"assessment": "Hearing voices since Tuesday"})
    [step, *_] = steps_of(referral_id)
    attempt = {"step_id": str(step.pk), "method": "phone", "result": "reached", "attempted_at": now_iso()}
    assert pushed(crew, "followups.contact_attempt", attempt | {"notes": "Feels safer"})["status"] == "applied"
    service = Service.objects.create(program=program, name="Harlem crisis stabilisation", service_type="crisis")
    # A note the server refused (its signature time is no time): kept for the program's supervisors.
    refused_note = {"encounter_id": str(step.plan.encounter_id), "body": "Says the voices are back", "signed_at": "x"}
    quarantined = pushed(crew, "care.note", refused_note)
    assert quarantined["status"] == "quarantined"
    notification = notify(
        program=program,
        recipients=[crew.user.pk],
        kind="dispatch.alert",
        text="Dispatch alert: an assignment needs your attention.",
    )
    health = {
        str(incident.pk),
        str(assignment.pk),
        str(referral_id),
        str(step.pk),
        str(step.plan.encounter_id),
        str(notification.pk),
        str(crew.device.pk),
        str(supervisor.device.pk),
        "lithium",
        "+12125550199",
        "Hearing voices",
        "Feels safer",
        "voices are back",
    }
    return World(
        program=program,
        crew=crew,
        kwargs={
            "incident_id": str(incident.pk),
            "assignment_id": str(assignment.pk),
            "unit_id": str(crew.unit.pk),
            "referral_id": str(referral_id),
            "step_id": str(step.pk),
            "service_id": str(service.pk),
            "notification_id": str(notification.pk),
            "device_id": str(crew.device.pk),
            "program": program.slug,
            "provider": "fcm",
            "quarantined_id": str(Mutation.objects.get(record_id=quarantined["id"]).pk),
        },
        # Someone of another program sees nothing of it; a crew of another unit of the same
        # program may see the program's units and directory, nothing of this crew's work.
        secrets={FOREIGN: health | {str(crew.unit.pk), str(service.pk), program.slug}, OUTSIDER: health},
    )


def database_state(ignore_rows_of: set[uuid.UUID]) -> dict[str, str]:
    """A checksum of every table's rows. The outsiders' own bookkeeping (a device's last-seen
    time, lockout logs, sessions) is left out: it is theirs, not the program's."""
    skipped = {"audit_auditevent", "accounts_device", "axes_accesslog", "axes_accessattempt", "django_session"}
    with connection.cursor() as cursor:
        cursor.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public' ORDER BY tablename")
        tables = [table for (table,) in cursor.fetchall() if table not in skipped]
        parts = [
            # Table names come from the catalogue, not from input.
            f"SELECT '{table}', md5(coalesce(string_agg(md5(t::text), ',' ORDER BY md5(t::text)), '')) FROM {table} t"  # noqa: S608
            for table in tables
        ]
        cursor.execute(" UNION ALL ".join(parts))
        state = dict(cursor.fetchall())
    devices = Device.objects.exclude(pk__in=ignore_rows_of).order_by("pk")
    state["accounts_device"] = str(list(devices.values_list("pk", "revoked_at", "revoke_reason", "name")))
    return state


def concrete(value: Any, world: World) -> Any:
    """Fill placeholders in a body or query ("now", "new_uuid", "unit_id", ...)."""
    if value == "intake":
        return intake_body(world.program)
    if isinstance(value, dict):
        return {key: concrete(item, world) for key, item in value.items()}
    if isinstance(value, list):
        return [concrete(item, world) for item in value]
    if value == "now":
        return now_iso()
    if value == "new_uuid":
        return str(uuid.uuid4())
    if value == "crew_user":
        return str(world.crew.user.pk)
    if value == "quarantined_number":  # a ledger id, sent as the number it is
        return int(world.kwargs["quarantined_id"])
    if isinstance(value, str) and value in world.kwargs:
        return world.kwargs[value]
    return value


def client_for(actor: str, actors: dict[str, CrewMember]) -> APIClient:
    client = APIClient() if actor == ANONYMOUS else actors[actor].client()
    client.defaults.update(PROTOCOL)  # the sync routes want the client's protocol version
    return client


def test_no_one_outside_reaches_the_programs_records_through_any_route(
    program: Program, crew_member: CrewMember, outsider: CrewMember, foreign_dispatcher: CrewMember
) -> None:
    world = build_world(program, crew_member)
    actors = {FOREIGN: foreign_dispatcher, OUTSIDER: outsider}
    failures: list[str] = []

    for name, method, pattern in sorted(routes(), key=lambda route: route[:2]):
        kwargs = {key: world.kwargs[key] for key in pattern.pattern.converters}
        url = reverse(name, kwargs=kwargs)
        for attempt in MATRIX[(name, method)]:
            before = database_state({actor.device.pk for actor in actors.values()})
            audit_before = AuditEvent.objects.count()
            body = concrete(attempt.body, world)
            query = concrete(attempt.query, world)
            client = client_for(attempt.actor, actors)
            if method == "GET":
                response = client.get(url, query)
            elif name in FORM_POSTS:
                response = client.post(url, urlencode(body), content_type="application/x-www-form-urlencoded")
            else:
                response = getattr(client, method.lower())(url, body, format="json")
            label = f"{method} {url} as {attempt.actor}"

            if attempt.status in (NO_DATA, HEALTH):
                allowed = 200 <= response.status_code < 300 or (
                    attempt.status == HEALTH and response.status_code == 503
                )
                if not allowed:
                    failures.append(f"{label}: {response.status_code}, expected 2xx ({response.content[:200]!r})")
                content = response.content.decode(errors="replace") if not response.streaming else ""
                leaked = {secret for secret in world.secrets.get(attempt.actor, set()) if secret in content}
                if leaked:
                    failures.append(f"{label}: the answer holds {sorted(leaked)}")
            elif response.status_code != attempt.status:
                failures.append(
                    f"{label}: {response.status_code}, expected {attempt.status} ({response.content[:200]!r})"
                )

            after = database_state({actor.device.pk for actor in actors.values()})
            changed = {table for table in before if before[table] != after.get(table)}
            changed -= CHANGES_OWN_ROWS.get((name, method), set())
            if changed:
                failures.append(f"{label}: changed {sorted(changed)}")
            if AuditEvent.objects.count() != audit_before:
                failures.append(f"{label}: recorded an access to a health record")

            if (name, method) == ("token-rotate", "POST") and response.status_code == 201:
                # Go on with the new token. Its first use ends the old one: the rotation's own
                # bookkeeping, done here so that it is not taken for the next request's doing.
                actors[attempt.actor].token = response.json()["token"]
                assert actors[attempt.actor].client().get("/api/v1/me/").status_code == 200

    assert failures == [], "\n".join(failures)


@pytest.mark.parametrize("authorization", [None, "Bearer not-a-token-anyone-was-issued"], ids=["no-token", "unknown"])
def test_every_route_not_public_refuses_a_caller_without_a_valid_token(
    program: Program, crew_member: CrewMember, authorization: str | None
) -> None:
    world = build_world(program, crew_member)
    public = {route for route, attempts in MATRIX.items() if any(a.actor == ANONYMOUS for a in attempts)}
    failures: list[str] = []
    tried = 0

    for name, method, pattern in sorted(routes(), key=lambda route: route[:2]):
        if (name, method) in public:
            continue
        url = reverse(name, kwargs={key: world.kwargs[key] for key in pattern.pattern.converters})
        client = client_for(ANONYMOUS, {})
        if authorization:
            client.credentials(HTTP_AUTHORIZATION=authorization)
        before = database_state(set())
        response = getattr(client, method.lower())(url, {}, format="json")
        tried += 1
        if response.status_code != 401:
            failures.append(f"{method} {url}: {response.status_code}, expected 401 ({response.content[:200]!r})")
        elif response.json().get("code") not in ("not_authenticated", "token_invalid"):
            failures.append(f"{method} {url}: a 401 without its machine-readable reason ({response.content[:200]!r})")
        if database_state(set()) != before:
            failures.append(f"{method} {url}: changed the database")

    assert failures == [], "\n".join(failures)
    assert tried >= len(MATRIX) - len(public) > 40


def test_no_one_outside_answers_the_programs_assignments_over_the_websocket(
    program: Program, crew_member: CrewMember, outsider: CrewMember, foreign_dispatcher: CrewMember
) -> None:
    world = build_world(program, crew_member)
    for message_type, case in MESSAGES.items():
        handler = handler_for(message_type)
        assert handler is not None
        for actor in (outsider, foreign_dispatcher):
            token = DeviceToken.objects.select_related("device__user").filter(device=actor.device).first()
            assert token is not None
            before = database_state({outsider.device.pk, foreign_dispatcher.device.pk})
            with pytest.raises(HandlerError) as refusal:
                handler(token, {"type": message_type, **concrete(case["message"], world)})
            assert refusal.value.code == case["code"], message_type
            assert database_state({outsider.device.pk, foreign_dispatcher.device.pk}) == before, message_type
