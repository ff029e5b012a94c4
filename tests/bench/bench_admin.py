"""The admin workspace with a year of a busy program: 100,000 incidents.

Loads the incidents with their assignments and timelines, encounters, referrals with
outcomes, follow-up steps, sync conflicts and an audit trail (INSERT … SELECT, seconds), signs
a supervisor in through the real admin login with a one-time code, and times the server's
rendering of every page a supervisor works in: the home page with its queues, every
changelist the workspace shows them (and each queue's list), change pages, and the program
dashboard. Figures: the median (and the best) of five requests per page after one to warm up,
in ms, and the number of queries each page runs. Target: every page under 300 ms.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from tests.bench.support import bench_django, emit

INCIDENTS = 100_000
OTHER_PROGRAM_INCIDENTS = 10_000
SPACING_SECONDS = 315  # 100,000 calls a year apart by this many seconds
OPEN_INCIDENTS = 50
ENCOUNTERS = 60_000
PERSONS = 50_000
REFERRALS = 30_000  # one per second encounter; each with a follow-up plan of three steps
CONFLICTS = 2_000
AUDIT_EVENTS = 200_000
ZONES, UNITS, CASE_MANAGERS, CREW = 20, 60, 20, 120
TARGET_MS = 300
RUNS = 5


def _fill_program(cursor: Any, params: dict[str, Any], prefix: str, incidents: int) -> None:
    """One program's calls, assignments and timelines; ids are md5 of ``prefix`` and the row number."""
    p = {**params, "prefix": prefix, "n": incidents}
    cursor.execute(
        """
        INSERT INTO dispatch_incident (id, created_at, updated_at, program_id, external_call_id, source, priority,
            received_at, address, zone_id, callback_number, nature, mental_health_nexus, weapon, violence_in_progress,
            imminent_self_harm, medical_emergency, substance_use, known_high_risk, acuity, hazards,
            recommended_response, triage_reasons, chosen_response, override_reason, status, served_at, closed_at,
            unserved_reason, unserved_note)
        SELECT md5(%(prefix)s || 'i' || g)::uuid, t.at, t.at, %(program)s, 'CAD-' || lpad(g::text, 7, '0'), '911',
               'high', t.at, '', (%(zones)s::uuid[])[1 + g %% cardinality(%(zones)s::uuid[])], '', '', true, false,
               false, false, false, false, false, 'moderate', '[]'::jsonb, r.response, '[]'::jsonb, r.response, '',
               CASE WHEN g <= %(open)s THEN 'open' ELSE 'closed' END,
               CASE WHEN g <= %(open)s OR g %% 33 = 0 THEN NULL ELSE t.at + make_interval(secs => 300 + g %% 1800) END,
               CASE WHEN g <= %(open)s THEN NULL ELSE t.at + interval '2 hours' END,
               CASE WHEN g > %(open)s AND g %% 33 = 0
                    THEN (ARRAY['no_unit_available', 'outside_hours', 'person_not_found',
                                'declined_by_person'])[1 + g %% 4]
                    ELSE '' END,
               ''
        FROM generate_series(1, %(n)s) g,
             LATERAL (SELECT %(now)s - make_interval(secs => g * %(spacing)s) AS at) t,
             LATERAL (SELECT (ARRAY['emt_clinician', 'community_response', 'co_response', 'mobile_treatment',
                                    'emt_clinician'])[1 + g %% 5] AS response) r
        """,
        p,
    )
    # One assignment per call (offered and not yet acknowledged for the open ones, declined for
    # the unserved, cleared otherwise) and a declined first offer on every tenth call.
    cursor.execute(
        """
        INSERT INTO dispatch_assignment (id, created_at, updated_at, incident_id, unit_id, status, is_additional,
            offered_at, resend_count, acknowledged_at, acknowledged_by_id, acknowledged_device_id, ended_at, end_reason)
        SELECT md5(%(prefix)s || 'a' || g)::uuid, i.received_at, i.received_at, i.id,
               (%(units)s::uuid[])[1 + g %% cardinality(%(units)s::uuid[])],
               CASE WHEN g <= %(open)s THEN 'offered' WHEN g %% 33 = 0 THEN 'declined' ELSE 'cleared' END,
               g <= %(open)s, i.received_at + interval '30 seconds', 0,
               CASE WHEN g <= %(open)s OR g %% 33 = 0 THEN NULL
                    ELSE i.received_at + make_interval(secs => 40 + g %% 300) END,
               CASE WHEN g <= %(open)s OR g %% 33 = 0 THEN NULL ELSE %(crew)s END,
               CASE WHEN g <= %(open)s OR g %% 33 = 0 THEN NULL ELSE %(device)s END,
               CASE WHEN g <= %(open)s THEN NULL ELSE i.received_at + interval '1 hour' END,
               CASE WHEN g %% 33 = 0 AND g > %(open)s THEN %(declined_reason)s ELSE '' END
        FROM generate_series(1, %(n)s) g JOIN dispatch_incident i ON i.id = md5(%(prefix)s || 'i' || g)::uuid
        UNION ALL
        SELECT md5(%(prefix)s || 'ad' || g)::uuid, i.received_at, i.received_at, i.id,
               (%(units)s::uuid[])[1 + (g + 7) %% cardinality(%(units)s::uuid[])], 'declined', false,
               i.received_at + interval '5 seconds', 0, NULL, NULL, NULL, i.received_at + interval '20 seconds',
               %(out_of_area)s
        FROM generate_series(10, %(n)s, 10) g JOIN dispatch_incident i ON i.id = md5(%(prefix)s || 'i' || g)::uuid
        """,
        p,
    )
    cursor.execute(
        """
        INSERT INTO dispatch_timelineevent (id, incident_id, assignment_id, kind, at, applied, detail, reason)
        SELECT md5(%(prefix)s || 't' || g || k.kind)::uuid, md5(%(prefix)s || 'i' || g)::uuid,
               CASE WHEN k.kind = 'received' THEN NULL ELSE md5(%(prefix)s || 'a' || g)::uuid END,
               k.kind, %(now)s - make_interval(secs => g * %(spacing)s - k.after), true, '{}'::jsonb, ''
        FROM generate_series(1, %(n)s) g,
             (VALUES ('received', 0), ('offered', 30), ('acknowledged', 90)) AS k(kind, after)
        """,
        p,
    )


def _fill_care(cursor: Any, params: dict[str, Any]) -> None:
    cursor.execute(
        """
        INSERT INTO care_person (id, created_at, updated_at, is_deleted, given_name, family_name, phone_number,
                                 created_by_id, program_id, unit_id)
        SELECT md5('pe' || g)::uuid, %(now)s, %(now)s, false, 'Given' || g, 'Family' || g,
               '+1212555' || lpad(g::text, 4, '0'),
               %(crew)s, %(program)s, (%(units)s::uuid[])[1]
        FROM generate_series(1, %(persons)s) g
        """,
        params,
    )
    # Encounter g is the care of call g: started twenty minutes after the call came in.
    cursor.execute(
        """
        INSERT INTO care_encounter (id, created_at, updated_at, is_deleted, started_at, ended_at, location, assessment,
                                    disposition, created_by_id, program_id, unit_id, person_id)
        SELECT md5('e' || g)::uuid, i.received_at, i.received_at, false, i.received_at + interval '20 minutes',
               i.received_at + interval '80 minutes', '', '',
               (ARRAY['resolved_on_scene', 'referred', 'transported_voluntary', 'transported_involuntary',
                      'declined_services', 'unable_to_locate', ''])[1 + g %% 7],
               %(crew)s, %(program)s, (%(units)s::uuid[])[1 + g %% cardinality(%(units)s::uuid[])],
               md5('pe' || (1 + g %% %(persons)s))::uuid
        FROM generate_series(1, %(encounters)s) g JOIN dispatch_incident i ON i.id = md5('pi' || g)::uuid
        """,
        params,
    )
    cursor.execute(
        """
        INSERT INTO care_referral (id, created_at, updated_at, is_deleted, service_type, service_name, reason, status,
            created_by_id, encounter_id, program_id, unit_id, consent_to_contact, consent_to_share, priority,
            task_status, warm_handoff)
        SELECT md5('r' || g)::uuid, e.ended_at, e.ended_at, false, 'outpatient_mental_health', 'Clinic', '',
               (ARRAY['open', 'scheduled', 'connected', 'attended', 'no_show', 'unable_to_reach'])[1 + g %% 6],
               %(crew)s, e.id, %(program)s, e.unit_id, true, true, 'routine', 'requested', false
        FROM generate_series(1, %(referrals)s) g JOIN care_encounter e ON e.id = md5('e' || (2 * g))::uuid
        """,
        params,
    )
    cursor.execute(
        """
        INSERT INTO care_referraloutcomeevent (id, created_at, updated_at, is_deleted, outcome, observed_at, details,
                                               created_by_id, program_id, referral_id, unit_id)
        SELECT md5('ro' || g)::uuid, r.created_at, r.created_at, false,
               CASE WHEN r.status = 'open' THEN 'scheduled' ELSE r.status END,
               r.created_at + make_interval(days => g %% 40), '', %(crew)s, %(program)s, r.id, r.unit_id
        FROM generate_series(1, %(referrals)s) g JOIN care_referral r ON r.id = md5('r' || g)::uuid
        """,
        params,
    )
    cursor.execute(
        """
        INSERT INTO followups_followupplan (id, created_at, updated_at, trigger, anchor_at, encounter_id, program_id,
                                            unit_id, person_id)
        SELECT md5('pl' || g)::uuid, e.ended_at, e.ended_at, 'referral', e.ended_at, e.id, %(program)s, e.unit_id,
               e.person_id
        FROM generate_series(1, %(referrals)s) g JOIN care_encounter e ON e.id = md5('e' || (2 * g))::uuid
        """,
        params,
    )
    # Three steps a plan, due a day, a week and a month after the encounter: the ones due
    # by now mostly completed (some late), some missed, one in nine still pending.
    cursor.execute(
        """
        INSERT INTO followups_followupstep (id, created_at, updated_at, key, label, due_at, status,
            overdue_margin_minutes, completed_by_outcomes, missed_reason, plan_id, program_id, unit_id, owner_id,
            closed_at)
        SELECT md5('s' || g || s.key)::uuid, pl.anchor_at, pl.anchor_at, s.key, s.label, d.due_at,
               CASE WHEN d.due_at > %(now)s OR (g + s.days) %% 9 = 0 THEN 'pending'
                    WHEN (g + s.days) %% 9 = 1 THEN 'missed' ELSE 'completed' END,
               240, '{}', '', pl.id, %(program)s, pl.unit_id,
               (%(owners)s::uuid[])[1 + g %% cardinality(%(owners)s::uuid[])],
               CASE WHEN d.due_at > %(now)s OR (g + s.days) %% 9 = 0 THEN NULL
                    ELSE d.due_at + make_interval(mins => (g * 7) %% 600) END
        FROM generate_series(1, %(referrals)s) g
             JOIN followups_followupplan pl ON pl.id = md5('pl' || g)::uuid,
             (VALUES ('first_contact', 'First contact', 1), ('one_week', 'One week', 7),
                     ('one_month', 'One month', 30)) AS s(key, label, days),
             LATERAL (SELECT pl.anchor_at + make_interval(days => s.days) AS due_at) d
        """,
        params,
    )


def _fill_sync_and_audit(cursor: Any, params: dict[str, Any]) -> None:
    cursor.execute(
        """
        INSERT INTO sync_mutation (id, payload_hash, record_type, record_id, operation, base_version, payload,
            observed_at_plausible, client_version, received_at, status, result, error_code, device_id, user_id)
        SELECT g, md5('m' || g), 'care.encounter', md5('e' || g)::uuid, 'update', 1, '{}'::jsonb, true, '',
               %(now)s - make_interval(hours => g), 'conflict', '{}'::jsonb, '', %(device)s, %(crew)s
        FROM generate_series(1, %(conflicts)s) g
        """,
        params,
    )
    cursor.execute("SELECT setval(pg_get_serial_sequence('sync_mutation', 'id'), %(conflicts)s)", params)
    cursor.execute(
        """
        INSERT INTO sync_conflict (id, program_id, record_type, record_id, kind, field, base_value, server_value,
            device_value, server_version, is_clinical_text, mutation_id, device_id, user_id, created_at, resolved_at,
            resolution)
        SELECT md5('c' || g)::uuid, %(program)s, 'care.encounter', md5('e' || g)::uuid, 'same_field', 'assessment',
               '"a"'::jsonb, '"b"'::jsonb, '"c"'::jsonb, 2, true, g, %(device)s, %(crew)s,
               %(now)s - make_interval(hours => g),
               CASE WHEN g %% 2 = 0 THEN %(now)s END, CASE WHEN g %% 2 = 0 THEN 'server' ELSE '' END
        FROM generate_series(1, %(conflicts)s) g
        """,
        params,
    )
    cursor.execute(
        """
        INSERT INTO audit_auditevent (occurred_at, actor_id, actor_username, device_id, program_id, action, channel,
                                      record_type, record_id)
        SELECT %(now)s - make_interval(secs => g * 150), %(crew)s, 'crew', %(device)s, %(program)s, 'read', 'sync',
               'care.encounter', md5('e' || (1 + g %% %(encounters)s))::uuid
        FROM generate_series(1, %(audit)s) g
        """,
        params,
    )


def _fill(now: Any) -> dict[str, Any]:
    from django.db import connection

    from apps.accounts.models import Device, DevicePlatform, Membership, Role, User
    from apps.common.encryption import seal
    from apps.teams.models import ResponseModel, Unit, Zone
    from tests.accounts.factories import PASSWORD, ProgramFactory

    started = time.perf_counter()
    program = ProgramFactory.create(slug="bench", name="Bench City")
    other = ProgramFactory.create(slug="elsewhere", name="Elsewhere")
    zones = Zone.objects.bulk_create([Zone(program=program, code=f"Z{i:02d}", name=f"Zone {i}") for i in range(ZONES)])
    models = list(ResponseModel)
    units = Unit.objects.bulk_create(
        [
            Unit(
                program=program,
                call_sign=f"U{i:03d}",
                response_model=models[i % len(models)],
                home_zone=zones[i % ZONES],
            )
            for i in range(UNITS)
        ]
    )
    other_zone = Zone.objects.create(program=other, code="O1", name="Other zone")
    other_unit = Unit.objects.create(program=other, call_sign="O-1", response_model=ResponseModel.EMT_CLINICIAN)
    supervisor = User.objects.create_user(username="supervisor", password=PASSWORD, is_staff=True)
    Membership.objects.create(user=supervisor, program=program, role=Role.SUPERVISOR)
    owners = User.objects.bulk_create([User(username=f"cm{i}", is_staff=True) for i in range(CASE_MANAGERS)])
    crew = User.objects.bulk_create([User(username=f"crew{i}") for i in range(CREW)])
    Membership.objects.bulk_create(
        [Membership(user=user, program=program, role=Role.CASE_MANAGER) for user in owners]
        + [Membership(user=user, program=program, role=Role.CLINICIAN) for user in crew]
    )
    devices = Device.objects.bulk_create(
        [Device(user=user, name=f"Tablet {user.username}", platform=DevicePlatform.ANDROID) for user in crew]
    )
    params: dict[str, Any] = {
        "now": now,
        "program": program.pk,
        "zones": [zone.pk for zone in zones],
        "units": [unit.pk for unit in units],
        "owners": [user.pk for user in owners],
        "crew": crew[0].pk,
        "device": devices[0].pk,
        "open": OPEN_INCIDENTS,
        "spacing": SPACING_SECONDS,
        "persons": PERSONS,
        "encounters": ENCOUNTERS,
        "referrals": REFERRALS,
        "conflicts": CONFLICTS,
        "audit": AUDIT_EVENTS,
        # A crew's reason for declining is sealed at rest, as the services store it.
        "declined_reason": seal("Busy"),
        "out_of_area": seal("Out of area"),
    }
    with connection.cursor() as cursor:
        _fill_program(cursor, params, "p", INCIDENTS)
        _fill_program(
            cursor,
            {**params, "program": other.pk, "zones": [other_zone.pk], "units": [other_unit.pk], "spacing": 3150},
            "o",
            OTHER_PROGRAM_INCIDENTS,
        )
        _fill_care(cursor, params)
        _fill_sync_and_audit(cursor, params)
        cursor.execute("ANALYZE")
        counts = {}
        for table in (
            "dispatch_incident",
            "dispatch_assignment",
            "dispatch_timelineevent",
            "care_encounter",
            "care_referral",
            "followups_followupstep",
            "sync_conflict",
            "audit_auditevent",
        ):
            cursor.execute(f"SELECT count(*) FROM {table}")  # noqa: S608 - our own table names
            counts[table] = cursor.fetchone()[0]
    return {
        "rows": counts,
        "load_s": round(time.perf_counter() - started, 1),
        "program": program,
        "supervisor": supervisor,
    }


def _sign_in(client: Any, user: Any) -> None:
    from django_otp.oath import TOTP
    from django_otp.plugins.otp_totp.models import TOTPDevice

    from tests.accounts.factories import PASSWORD

    device = TOTPDevice.objects.create(user=user, name="authenticator", confirmed=True)
    code = str(TOTP(device.bin_key, device.step, device.t0, device.digits, device.drift).token()).zfill(device.digits)
    response = client.post(
        "/admin/login/?next=/admin/",
        {"username": user.username, "password": PASSWORD, "otp_device": device.persistent_id, "otp_token": code},
    )
    assert response.status_code == 302, response.content[:2000]


def _pages(program: Any) -> dict[str, str]:
    from django.contrib import admin
    from django.contrib.admin.utils import quote
    from django.urls import reverse

    from apps.care.models import Encounter, Referral
    from apps.dispatch.models import Incident
    from apps.followups.models import FollowUpStep
    from apps.sync.models import Conflict
    from apps.workspace.selectors import QUEUES

    pages = {"index": reverse("admin:index")}
    for model, model_admin in admin.site._registry.items():
        if getattr(model_admin, "program_path", None) is None:
            continue  # superusers' pages only
        meta = model._meta
        pages[f"{meta.label_lower} list"] = reverse(f"admin:{meta.app_label}_{meta.model_name}_changelist")
    for queue in QUEUES:
        pages[f"queue {queue.key}"] = queue.changelist_url()
    for record_model in (Incident, FollowUpStep, Referral, Encounter, Conflict):
        record = record_model._default_manager.filter(program=program).order_by("pk").first()
        assert record is not None, record_model._meta.label
        name = f"{record_model._meta.app_label}_{record_model._meta.model_name}"
        pages[f"{record_model._meta.label_lower} change"] = reverse(f"admin:{name}_change", args=[quote(record.pk)])
    pages["incident search"] = reverse("admin:dispatch_incident_changelist") + "?q=CAD-0012345"
    pages["followupstep search"] = reverse("admin:followups_followupstep_changelist") + "?q=Family123"
    dashboard = reverse("admin:dashboard")
    pages["dashboard"] = dashboard
    pages["dashboard 365 days"] = f"{dashboard}?start={_days_ago(program, 364)}"
    pages["dashboard csv"] = f"{dashboard}?format=csv"
    return pages


def _days_ago(program: Any, days: int) -> str:
    import datetime as dt
    from zoneinfo import ZoneInfo

    from django.utils import timezone

    return (timezone.now().astimezone(ZoneInfo(program.time_zone)).date() - dt.timedelta(days=days)).isoformat()


@contextmanager
def _counting_queries() -> Iterator[list[str]]:
    """Every query run meanwhile, on any connection object (the test client's handler may run
    the view in a context of its own, with a connection object of its own)."""
    from django.db.backends import utils

    executed: list[str] = []
    cursor_class: Any = utils.CursorWrapper  # a private method, absent from the type stubs
    original = cursor_class._execute

    def counted(self: Any, sql: str, *args: Any) -> Any:
        executed.append(sql)
        return original(self, sql, *args)

    cursor_class._execute = counted
    try:
        yield executed
    finally:
        cursor_class._execute = original


def _time(client: Any, url: str) -> tuple[float, float, int]:
    response = client.get(url)  # warm: templates, caches, the plan of each query
    assert response.status_code == 200, (url, response.status_code)
    with _counting_queries() as queries:
        client.get(url)
    timings = []
    for _ in range(RUNS):
        started = time.perf_counter()
        response = client.get(url)
        timings.append(time.perf_counter() - started)
        assert response.status_code == 200, (url, response.status_code)
    return statistics.median(timings) * 1000, min(timings) * 1000, len(queries)


def main() -> None:
    with bench_django():
        from django.test import Client
        from django.utils import timezone

        filled = _fill(timezone.now())
        program, supervisor = filled.pop("program"), filled.pop("supervisor")
        print(f"filled: {filled}", flush=True)
        client = Client()
        _sign_in(client, supervisor)
        pages: dict[str, float] = {}
        best: dict[str, float] = {}
        queries: dict[str, int] = {}
        for name, url in _pages(program).items():
            ms, best_ms, query_count = _time(client, url)
            pages[name], best[name], queries[name] = round(ms, 1), round(best_ms, 1), query_count
            print(f"{name:45s} {ms:8.1f} ms (best {best_ms:6.1f}) {query_count:4d} queries  {url}", flush=True)
        slowest = max(pages, key=lambda name: pages[name])
        emit(
            "admin",
            slowest_page=slowest,
            slowest_ms=pages[slowest],
            target_ms=TARGET_MS,
            all_under_target=pages[slowest] < TARGET_MS,
            incidents=INCIDENTS,
            **filled,
            pages=pages,
            # The fastest of the five: less disturbed by other work on a shared machine.
            best_ms=best,
            queries=queries,
        )


if __name__ == "__main__":
    main()
