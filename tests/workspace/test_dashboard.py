"""The program dashboard: each figure from known data, exact; who may open it; charts; CSV."""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
import threading
from html.parser import HTMLParser
from typing import Any

import pytest
from django.db import connection, transaction
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from apps.accounts.models import Program, Role
from apps.audit.models import AuditEvent
from apps.care.models import Person
from apps.workspace.dashboard import Dashboard, Window, figure_rows, program_dashboard
from tests.accounts.factories import MembershipFactory, ProgramFactory, UserFactory
from tests.conftest import sign_in_to_admin
from tests.teams.factories import UnitFactory, ZoneFactory
from tests.workspace.dashboard_data import (
    NEW_YORK,
    NOW,
    WINDOW_END,
    WINDOW_START,
    Known,
    encounter,
    incident,
    known_program,
    local,
    staff_member,
)


def figures(program: Program, now: dt.datetime = NOW) -> Dashboard:
    return program_dashboard(window=Window(program, WINDOW_START, WINDOW_END), now=now)


# --- the figures -----------------------------------------------------------------------------


def test_calls_by_zone_hour_and_response_in_the_programs_time_zone(program: Program) -> None:
    known_program(program)

    board = figures(program)

    assert board.calls == 9
    assert board.calls_by_zone == [
        ("Harlem", {"emt_clinician": 5}),
        ("East Harlem", {"community_response": 2, "emt_clinician": 1}),
        ("No zone", {"police": 1}),
    ]
    expected_hours = [0] * 24
    for hour, count in {0: 1, 9: 2, 10: 1, 11: 1, 12: 1, 13: 1, 14: 1, 23: 1}.items():
        expected_hours[hour] = count
    assert board.calls_by_hour == expected_hours
    assert board.chosen_response == {"emt_clinician": 6, "community_response": 2, "police": 1}
    assert board.recommended_response == {"emt_clinician": 5, "co_response": 1, "community_response": 2, "police": 1}
    assert board.overridden == 1


@pytest.mark.django_db(transaction=True)
def test_sections_read_at_once_on_connections_of_their_own_give_the_figures_read_one_by_one(
    program: Program, django_assert_num_queries: Any
) -> None:
    known_program(program)

    with django_assert_num_queries(0):  # none on this request's own connection
        at_once = figures(program)
    with transaction.atomic():  # inside a transaction, every section reads in it
        one_by_one = figures(program)

    assert at_once.calls == 9 and at_once.steps_due > 0 and at_once.referrals > 0
    assert figure_rows(at_once) == figure_rows(one_by_one)


@pytest.mark.django_db(transaction=True)
def test_as_many_dashboards_at_once_as_the_pool_has_connections_all_finish(program: Program, settings: Any) -> None:
    known_program(program)
    connection.close()  # this thread's connection back to the pool: the requests take them all
    requests = settings.DATABASE_POOL_SIZE
    started = threading.Barrier(requests)
    boards: list[Dashboard] = []

    def request() -> None:
        try:
            connection.ensure_connection()  # as a request has, from its sign-in and session
            started.wait(timeout=30)
            boards.append(figures(program))
        finally:
            connection.close()

    threads = [threading.Thread(target=request) for _ in range(requests)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)

    assert [board.calls for board in boards] == [9] * requests


def test_eligible_calls_served_and_not_served_with_reasons(program: Program) -> None:
    known_program(program)

    board = figures(program)

    assert (board.eligible, board.eligible_served, board.eligible_unserved, board.eligible_open) == (8, 4, 3, 1)
    assert board.eligible_unserved_by_reason == {"no_unit_available": 2, "person_not_found": 1}


def test_response_times_median_and_90th_percentile(program: Program) -> None:
    known_program(program)

    board = figures(program)

    # 30, 60, 90, 120 s: median 75; p90 interpolates 0.7 of the way from 90 to 120.
    assert board.offer_to_acknowledgement.count == 4
    assert board.offer_to_acknowledgement.median_seconds == pytest.approx(75.0)
    assert board.offer_to_acknowledgement.p90_seconds == pytest.approx(111.0)
    # 600, 1200, 1800, 2400 s: median 1500; p90 = 1800 + 0.7 * 600.
    assert board.call_to_on_scene.count == 4
    assert board.call_to_on_scene.median_seconds == pytest.approx(1500.0)
    assert board.call_to_on_scene.p90_seconds == pytest.approx(2220.0)


def test_durations_are_none_when_nothing_was_measured(program: Program) -> None:
    board = figures(program)

    assert (board.calls, board.offer_to_acknowledgement.count) == (0, 0)
    assert board.offer_to_acknowledgement.median_seconds is None
    assert board.call_to_on_scene.p90_seconds is None
    assert board.steps_on_time_rate.percent is None


def test_dispositions_of_encounters_started_in_the_range(program: Program) -> None:
    known_program(program)

    board = figures(program)

    assert board.dispositions == {
        "resolved_on_scene": 2,
        "referred": 4,
        "transported_voluntary": 1,
        "transported_involuntary": 1,
        "": 1,
    }
    assert board.transport_destinations == {"community_location": 1, "hospital": 1}


def test_referral_connection_counts_only_referrals_old_enough(program: Program) -> None:
    known_program(program)

    on_the_14th = figures(program)
    a_month_later = figures(program, now=dt.datetime(2026, 12, 20, tzinfo=dt.UTC))

    assert on_the_14th.referrals == 4
    # Made on the 2nd, 3rd, 5th are 7 days old by the 14th; of them only the 2nd's connected within 7.
    assert (on_the_14th.referral_connection[7].numerator, on_the_14th.referral_connection[7].denominator) == (1, 3)
    assert on_the_14th.referral_connection[7].percent == pytest.approx(100 / 3)
    assert on_the_14th.referrals_too_recent == {7: 1, 30: 4}
    assert on_the_14th.referral_connection[30].percent is None
    # By 20 December every referral counts: within 7 days the 2nd's and the 9th's; within 30
    # also the 3rd's (attended after 10). The no-show's deleted "connected" event never counts.
    assert (a_month_later.referral_connection[7].numerator, a_month_later.referral_connection[7].denominator) == (2, 4)
    assert (a_month_later.referral_connection[30].numerator, a_month_later.referral_connection[30].denominator) == (
        3,
        4,
    )
    assert a_month_later.referral_connection[30].percent == pytest.approx(75.0)


def test_follow_up_steps_completed_on_time(program: Program) -> None:
    known_program(program)

    board = figures(program)
    early_on_the_4th = figures(program, now=dt.datetime(2026, 11, 4, 12, 0, tzinfo=dt.UTC))

    assert (board.steps_due, board.steps_on_time, board.steps_late, board.steps_missed, board.steps_open) == (
        5,
        2,
        1,
        1,
        1,
    )
    assert board.steps_on_time_rate.percent == pytest.approx(40.0)
    # On the 4th at 12:00 UTC only the steps due by then have come due.
    assert early_on_the_4th.steps_due == 3


# --- the page --------------------------------------------------------------------------------


class Charts(HTMLParser):
    """The charts of a page: each data-chart with the data-value of its bars, and its title."""

    def __init__(self) -> None:
        super().__init__()
        self.charts: dict[str, list[str]] = {}
        self.titles: dict[str, str] = {}
        self._current: str | None = None
        self._in_title = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = dict(attrs)
        name = values.get("data-chart")
        if tag == "svg" and name:
            self._current = name
            self.charts[name] = []
            assert values.get("role") == "img"
        elif tag == "rect" and self._current and "data-value" in values:
            self.charts[self._current].append(values["data-value"] or "")
        elif tag == "title" and self._current and self._current not in self.titles:
            self._in_title = True

    def handle_data(self, data: str) -> None:
        if self._in_title and self._current:
            self.titles[self._current] = data
            self._in_title = False

    def handle_endtag(self, tag: str) -> None:
        if tag == "svg":
            self._current = None


def dashboard_url(program: Program, **params: str) -> str:
    query = {"program": program.slug, "start": "2026-11-01", "end": "2026-11-10"} | params
    return reverse("admin:dashboard") + "?" + "&".join(f"{key}={value}" for key, value in query.items())


def test_a_supervisor_sees_the_charts_with_their_numbers(program: Program) -> None:
    known_program(program)
    client = sign_in_to_admin(Client(), staff_member(program, Role.SUPERVISOR))

    response = client.get(dashboard_url(program))

    assert response.status_code == 200
    parser = Charts()
    parser.feed(response.content.decode())
    assert set(parser.charts) == {
        "calls-by-hour",
        "calls-by-zone",
        "response-mix",
        "eligible-served",
        "dispositions",
        "transported-to",
        "follow-up-steps",
    }
    assert parser.charts["calls-by-hour"] == [
        "1",
        "0",
        "0",
        "0",
        "0",
        "0",
        "0",
        "0",
        "0",
        "2",
        "1",
        "1",
        "1",
        "1",
        "1",
        "0",
        "0",
        "0",
        "0",
        "0",
        "0",
        "0",
        "0",
        "1",
    ]
    # Harlem (EMT + clinician 5), East Harlem (EMT + clinician 1, community 2), no zone (police 1).
    assert parser.charts["calls-by-zone"] == ["5", "1", "2", "1"]
    assert parser.charts["eligible-served"] == ["4", "2", "1", "1"]
    assert parser.charts["follow-up-steps"] == ["2", "1", "1", "1"]
    assert parser.charts["transported-to"] == ["1", "1"]
    assert parser.titles["calls-by-hour"] == "Calls by hour of day"
    page = response.content.decode()
    assert "25 min 00 s" in page and "37 min 00 s" in page  # call to on scene: median, p90
    assert "1 min 15 s" in page and "1 min 51 s" in page  # offer to acknowledgement


def test_the_dashboard_names_no_one_and_reads_no_health_record(program: Program) -> None:
    known = known_program(program)
    person = Person.objects.create(
        program=program, unit=known.unit, created_by=known.author, given_name="Zebulon", family_name="Quartermaine"
    )
    encounter(known, local(3, 15), "referred", person=person)
    client = sign_in_to_admin(Client(), staff_member(program, Role.ADMINISTRATOR))
    audited = AuditEvent.objects.count()

    response = client.get(dashboard_url(program))

    assert response.status_code == 200
    assert "Zebulon" not in response.content.decode() and "Quartermaine" not in response.content.decode()
    assert AuditEvent.objects.count() == audited


def test_the_csv_has_one_row_per_figure_and_bucket(program: Program) -> None:
    known_program(program)
    client = sign_in_to_admin(Client(), staff_member(program, Role.SUPERVISOR))

    response = client.get(dashboard_url(program, format="csv"))

    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/csv")
    assert response["Content-Disposition"] == (
        f'attachment; filename="dashboard-{program.slug}-2026-11-01-2026-11-10.csv"'
    )
    rows = list(csv.reader(io.StringIO(response.content.decode())))
    assert rows[0] == ["program", "start", "end", "figure", "bucket", "series", "value"]
    cells = {(row[3], row[4], row[5]): row[6] for row in rows[1:]}
    assert len(cells) == len(rows) - 1  # no figure/bucket twice
    assert all(row[:3] == [program.slug, "2026-11-01", "2026-11-10"] for row in rows[1:])
    assert cells[("calls", "total", "")] == "9"
    assert cells[("calls_by_zone", "East Harlem", "Community response")] == "2"
    assert cells[("calls_by_hour", "09:00", "")] == "2"
    assert cells[("calls_by_hour", "15:00", "")] == "0"
    assert cells[("response_mix", "Co-response (officer + clinician)", "recommended")] == "1"
    assert cells[("response_mix", "overridden by the dispatcher", "")] == "1"
    assert cells[("not_served_reasons", "No unit available", "")] == "2"
    assert cells[("eligible_calls", "still open", "")] == "1"
    assert cells[("call_to_on_scene_seconds", "median", "")] == "1500.0"
    assert cells[("call_to_on_scene_seconds", "p90", "")] == "2220.0"
    assert cells[("offer_to_acknowledgement_seconds", "p90", "")] == "111.0"
    assert cells[("dispositions", "Not recorded", "")] == "1"
    assert cells[("transported_to", "Hospital", "")] == "1"
    assert cells[("follow_up_steps", "percent on time", "")] == "40.0"
    # The page counts referrals as of now (after 16 November every one here is 7 days old).
    assert cells[("referrals_connected_within_7_days", "connected", "")] == "2"
    assert cells[("referrals_connected_within_7_days", "old enough to count", "")] == "4"


def test_a_formula_in_a_zone_name_is_not_a_formula_in_the_csv(program: Program) -> None:
    known = known_program(program)
    incident(known, local(4, 4), zone=ZoneFactory.create(program=program, name="=HYPERLINK(1)"))
    client = sign_in_to_admin(Client(), staff_member(program, Role.SUPERVISOR))

    rows = list(csv.reader(io.StringIO(client.get(dashboard_url(program, format="csv")).content.decode())))

    assert ["calls_by_zone", "'=HYPERLINK(1)", "EMT + mental-health clinician", "1"] in [row[3:] for row in rows]


def test_the_default_range_is_the_last_30_days_in_the_programs_time_zone(program: Program) -> None:
    known = Known(
        program,
        ZoneFactory.create(program=program, name="Harlem"),
        ZoneFactory.create(program=program),
        UnitFactory.create(program=program),
        UserFactory.create(),
    )
    today = timezone.now().astimezone(NEW_YORK).date()
    first_day = dt.datetime.combine(today - dt.timedelta(days=29), dt.time.min, tzinfo=NEW_YORK)
    incident(known, first_day + dt.timedelta(minutes=1))
    incident(known, first_day - dt.timedelta(minutes=1))
    client = sign_in_to_admin(Client(), staff_member(program, Role.SUPERVISOR))

    response = client.get(reverse("admin:dashboard"))

    assert response.status_code == 200
    window = response.context["window"]
    assert (window.start, window.end) == (today - dt.timedelta(days=29), today)
    assert response.context["board"].calls == 1


def test_a_range_given_by_one_end_only(program: Program) -> None:
    client = sign_in_to_admin(Client(), staff_member(program, Role.SUPERVISOR))
    today = timezone.now().astimezone(NEW_YORK).date()
    # Within the longest window allowed whatever day the test runs.
    start = today - dt.timedelta(days=200)

    from_a_start = client.get(reverse("admin:dashboard") + f"?start={start.isoformat()}")
    to_an_end = client.get(reverse("admin:dashboard") + "?end=2026-03-31")

    assert (from_a_start.context["window"].start, from_a_start.context["window"].end) == (start, today)
    assert (to_an_end.context["window"].start, to_an_end.context["window"].end) == (
        dt.date(2026, 3, 2),
        dt.date(2026, 3, 31),
    )
    assert 'value="2026-03-02"' in to_an_end.content.decode()


def test_a_supervisor_of_two_programs_picks_one(program: Program) -> None:
    known_program(program)
    other = ProgramFactory.create(slug="aaa-first-by-name", name="Aaa first")
    supervisor = staff_member(program, Role.SUPERVISOR)
    MembershipFactory.create(user=supervisor, program=other, role=Role.ADMINISTRATOR)
    client = sign_in_to_admin(Client(), supervisor)

    default = client.get(reverse("admin:dashboard") + "?start=2026-11-01&end=2026-11-10")
    chosen = client.get(dashboard_url(program))

    assert default.context["program"] == other and default.context["board"].calls == 0
    assert chosen.context["program"] == program and chosen.context["board"].calls == 9


@pytest.mark.parametrize("role", [Role.CASE_MANAGER, Role.DISPATCHER, Role.CLINICIAN])
def test_staff_who_do_not_lead_the_program_are_refused(program: Program, role: Role) -> None:
    known_program(program)
    client = sign_in_to_admin(Client(), staff_member(program, role))

    assert client.get(dashboard_url(program)).status_code == 403
    assert client.get(dashboard_url(program, format="csv")).status_code == 403


def test_an_outsider_gets_nothing_of_the_program(program: Program) -> None:
    known_program(program)
    elsewhere = ProgramFactory.create(slug="boston-pilot", name="Boston pilot")
    outsider = sign_in_to_admin(Client(), staff_member(elsewhere, Role.SUPERVISOR))
    foreign_case_manager = sign_in_to_admin(Client(), staff_member(elsewhere, Role.CASE_MANAGER))

    asked_for_ours = outsider.get(dashboard_url(program))
    asked_for_none = outsider.get(reverse("admin:dashboard") + "?program=no-such-program")
    own = outsider.get(reverse("admin:dashboard") + "?start=2026-11-01&end=2026-11-10")

    assert asked_for_ours.status_code == 404
    assert asked_for_none.status_code == 404
    assert own.status_code == 200 and own.context["board"].calls == 0
    assert [program.slug] != [choice.slug for choice in own.context["programs"]]
    assert program.name not in own.content.decode()
    assert foreign_case_manager.get(dashboard_url(program)).status_code == 403


def test_without_signing_in_the_dashboard_sends_to_the_login(program: Program) -> None:
    response = Client().get(reverse("admin:dashboard"))

    assert response.status_code == 302
    assert response["Location"].startswith(reverse("admin:login"))


def test_a_superuser_may_open_every_programs_dashboard(program: Program) -> None:
    known_program(program)
    client = sign_in_to_admin(Client(), UserFactory.create(is_staff=True, is_superuser=True))

    response = client.get(dashboard_url(program))

    assert response.status_code == 200 and response.context["board"].calls == 9


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"start": "2026-13-01"}, "start"),
        ({"end": "yesterday"}, "end"),
        ({"start": "2026-11-10", "end": "2026-11-01"}, "end"),
        ({"start": "2024-01-01", "end": "2026-11-10"}, "end"),
        # At the ends of the calendar: no day after the last, no default range before the first.
        ({"start": "9999-12-31", "end": ""}, "start"),
        ({"start": "9999-12-30", "end": "9999-12-31"}, "end"),
        ({"start": "", "end": "0001-01-05"}, "end"),
    ],
)
def test_a_bad_filter_is_refused_naming_the_field(program: Program, params: dict[str, str], field: str) -> None:
    client = sign_in_to_admin(Client(), staff_member(program, Role.SUPERVISOR))

    page = client.get(dashboard_url(program, **params))
    as_csv = client.get(dashboard_url(program, **({"format": "csv"} | params)))

    assert page.status_code == 400
    assert field in page.context["form"].errors
    assert as_csv.status_code == 400
    body = json.loads(as_csv.content)
    assert body["code"] == "invalid_input"
    assert [error["field"] for error in body["errors"]] == [field]


def test_the_admin_home_links_the_dashboard_for_those_who_may_open_it(program: Program) -> None:
    supervisor = sign_in_to_admin(Client(), staff_member(program, Role.SUPERVISOR))
    case_manager = sign_in_to_admin(Client(), staff_member(program, Role.CASE_MANAGER))

    assert reverse("admin:dashboard") in supervisor.get(reverse("admin:index")).content.decode()
    assert reverse("admin:dashboard") not in case_manager.get(reverse("admin:index")).content.decode()


def test_an_unknown_format_is_refused_naming_the_field(program: Program) -> None:
    client = sign_in_to_admin(Client(), staff_member(program, Role.SUPERVISOR))

    response = client.get(dashboard_url(program, format="pdf"))

    assert response.status_code == 400
    assert [error["field"] for error in json.loads(response.content)["errors"]] == ["format"]
