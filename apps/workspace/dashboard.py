"""The program dashboard's figures: aggregates computed by PostgreSQL, never by looping over rows.

Every figure is about one program and one date range in the program's own time zone. The
dispatch figures count the calls *received* in the range (with their assignments, whatever
day those were offered); the care figures count encounters *started* and referrals *made* in
the range; the follow-up figure counts steps *due* in the range. Nothing here names a person:
the dashboard shows counts, rates and durations only.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from typing import Any
from zoneinfo import ZoneInfo

from django.contrib.postgres.fields import ArrayField
from django.db import connection, connections
from django.db.models import Aggregate, Count, F, FloatField, Func, Min, Q, QuerySet
from django.db.models.functions import ExtractHour

from apps.accounts.models import Program, User
from apps.accounts.selectors import overseeing_roles, programs_where
from apps.care.models import (
    Disposition,
    Encounter,
    Referral,
    ReferralStatus,
    TransportDestination,
)
from apps.dispatch.models import Assignment, Incident, IncidentStatus, Response, UnservedReason
from apps.followups.models import FollowUpStep, StepStatus

# The referral outcomes that mean the person got to the service.
CONNECTED_OUTCOMES = (ReferralStatus.CONNECTED, ReferralStatus.ATTENDED)
CONNECTION_DAYS = (7, 30)

NO_ZONE = "No zone"
NOT_RECORDED = "Not recorded"


def dashboard_programs(user: User) -> QuerySet[Program]:
    """The programs whose dashboard this user may see: those they supervise or administer
    (the people who run a program, not its case managers or crews)."""
    if not (user.is_active and user.is_staff):
        return Program.objects.none()
    if user.is_superuser:
        return Program.objects.order_by("name")
    return programs_where(user=user, roles=overseeing_roles()).order_by("name")


@dataclass(frozen=True)
class Window:
    """A program and a range of whole days (both ends included) in the program's time zone."""

    program: Program
    start: dt.date
    end: dt.date

    @property
    def tz(self) -> ZoneInfo:
        return ZoneInfo(self.program.time_zone)

    @property
    def starts_at(self) -> dt.datetime:
        return dt.datetime.combine(self.start, dt.time.min, tzinfo=self.tz)

    @property
    def ends_at(self) -> dt.datetime:
        """The first instant after the range (midnight after the last day)."""
        return dt.datetime.combine(self.end + dt.timedelta(days=1), dt.time.min, tzinfo=self.tz)

    def within(self, field_name: str) -> Q:
        return Q(**{f"{field_name}__gte": self.starts_at, f"{field_name}__lt": self.ends_at})


def default_window(program: Program, now: dt.datetime, days: int = 30) -> Window:
    """The last ``days`` days up to and including today, in the program's time zone."""
    today = now.astimezone(ZoneInfo(program.time_zone)).date()
    return Window(program, today - dt.timedelta(days=days - 1), today)


# --- SQL helpers ---------------------------------------------------------------------------


class PercentileCont(Aggregate):
    """PostgreSQL's continuous percentiles (interpolating between the two nearest values),
    several from one sort: ``percentile_cont(ARRAY[0.5, 0.9]) WITHIN GROUP (ORDER BY …)``."""

    function = "percentile_cont"
    template = "%(function)s(ARRAY[%(fractions)s]::double precision[]) WITHIN GROUP (ORDER BY %(expressions)s)"
    output_field = ArrayField(FloatField())

    def __init__(self, fractions: tuple[float, ...], expression: Any, **extra: Any) -> None:
        if not fractions or not all(0.0 <= fraction <= 1.0 for fraction in fractions):
            raise ValueError("Percentiles are fractions between 0 and 1.")
        # Floats from our own code, formatted by repr: never user input in the SQL.
        super().__init__(expression, fractions=", ".join(repr(float(f)) for f in fractions), **extra)


MEDIAN_AND_P90 = (0.5, 0.9)


def _duration(count: int, percentiles: list[float | None] | None) -> Duration:
    median, p90 = percentiles or (None, None)
    return Duration(count, median, p90)


def seconds_between(earlier: str, later: str) -> Func:
    return Func(
        F(later) - F(earlier),
        template="EXTRACT(EPOCH FROM %(expressions)s)::double precision",
        output_field=FloatField(),
    )


# --- figures -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Duration:
    """Median and 90th percentile, in seconds, of ``count`` measured intervals (None when none)."""

    count: int
    median_seconds: float | None
    p90_seconds: float | None


@dataclass(frozen=True)
class Rate:
    numerator: int
    denominator: int

    @property
    def percent(self) -> float | None:
        return None if self.denominator == 0 else 100.0 * self.numerator / self.denominator


@dataclass
class Dashboard:
    window: Window
    calls: int = 0
    # (zone label, {response: count}), zones by descending total.
    calls_by_zone: list[tuple[str, dict[str, int]]] = field(default_factory=list)
    calls_by_hour: list[int] = field(default_factory=lambda: [0] * 24)
    chosen_response: dict[str, int] = field(default_factory=dict)
    recommended_response: dict[str, int] = field(default_factory=dict)
    overridden: int = 0
    eligible_served: int = 0
    eligible_open: int = 0
    eligible_unserved_by_reason: dict[str, int] = field(default_factory=dict)
    offer_to_acknowledgement: Duration = Duration(0, None, None)
    call_to_on_scene: Duration = Duration(0, None, None)
    dispositions: dict[str, int] = field(default_factory=dict)
    # Of the transported: where to (community location, hospital, "" not recorded).
    transport_destinations: dict[str, int] = field(default_factory=dict)
    referrals: int = 0
    # days -> connected within that many days, of the referrals at least that old.
    referral_connection: dict[int, Rate] = field(default_factory=dict)
    referrals_too_recent: dict[int, int] = field(default_factory=dict)
    steps_due: int = 0
    steps_on_time: int = 0
    steps_late: int = 0
    steps_missed: int = 0
    steps_open: int = 0

    @property
    def eligible_unserved(self) -> int:
        return sum(self.eligible_unserved_by_reason.values())

    @property
    def eligible(self) -> int:
        return self.eligible_served + self.eligible_open + self.eligible_unserved

    @property
    def steps_on_time_rate(self) -> Rate:
        return Rate(self.steps_on_time, self.steps_due)


def _incidents(window: Window) -> QuerySet[Incident]:
    return Incident.objects.filter(window.within("received_at"), program=window.program)


def _calls(board: Dashboard) -> None:
    window = board.window
    # One pass for the zones and the response mix: the groups are few (zones x responses x responses).
    by_zone: dict[str, dict[str, int]] = {}
    groups = (
        _incidents(window)
        .order_by()
        .values("zone__name", "chosen_response", "recommended_response")
        .annotate(n=Count("pk"))
    )
    for group in groups:
        zone, chosen, recommended, n = (
            group["zone__name"] or NO_ZONE,
            group["chosen_response"],
            group["recommended_response"],
            group["n"],
        )
        by_zone.setdefault(zone, {})
        by_zone[zone][chosen] = by_zone[zone].get(chosen, 0) + n
        board.chosen_response[chosen] = board.chosen_response.get(chosen, 0) + n
        board.recommended_response[recommended] = board.recommended_response.get(recommended, 0) + n
        board.overridden += n if chosen != recommended else 0
    board.calls_by_zone = sorted(by_zone.items(), key=lambda item: (-sum(item[1].values()), item[0]))
    board.calls = sum(board.chosen_response.values())
    # In the order of the choices, as the charts and the CSV show them.
    board.chosen_response = {v: board.chosen_response[v] for v in Response.values if v in board.chosen_response}
    board.recommended_response = {
        v: board.recommended_response[v] for v in Response.values if v in board.recommended_response
    }

    hours = (
        _incidents(window)
        .annotate(hour=ExtractHour("received_at", tzinfo=window.tz))
        .order_by()
        .values("hour")
        .annotate(n=Count("pk"))
    )
    for row in hours:
        board.calls_by_hour[row["hour"]] = row["n"]


def _eligible_and_on_scene(board: Dashboard) -> None:
    """One pass over the range's calls: eligible calls served or not (and why), and how long
    from the call to a unit on scene for every served call."""
    teams = Response.team_responses()
    # Cheap, selective tests first: PostgreSQL stops at the first false one, row by row.
    eligible = Q(recommended_response__in=teams) | Q(chosen_response__in=teams)
    on_scene = Q(served_at__isnull=False)
    seconds = seconds_between("received_at", "served_at")
    figures = _incidents(board.window).aggregate(
        served=Count("pk", filter=on_scene & eligible),
        open=Count("pk", filter=Q(status=IncidentStatus.OPEN, served_at=None) & eligible),
        **{
            f"reason:{reason}": Count(
                "pk", filter=Q(unserved_reason=reason, served_at=None, status=IncidentStatus.CLOSED) & eligible
            )
            for reason in UnservedReason
        },
        on_scene_n=Count("pk", filter=on_scene),
        on_scene=PercentileCont(MEDIAN_AND_P90, seconds, filter=on_scene),
    )
    board.eligible_served, board.eligible_open = figures["served"], figures["open"]
    reasons = {reason: figures[f"reason:{reason}"] for reason in UnservedReason.values}
    board.eligible_unserved_by_reason = {
        reason: n for reason, n in sorted(reasons.items(), key=lambda item: (-item[1], item[0])) if n
    }
    board.call_to_on_scene = _duration(figures["on_scene_n"], figures["on_scene"])


def _offer_to_acknowledgement(board: Dashboard) -> None:
    window = board.window
    # Offers made in the range, by the offering time and the unit (a small table) rather than
    # a join to every call.
    acknowledged = Assignment.objects.filter(
        window.within("offered_at"), unit__program=window.program, acknowledged_at__isnull=False
    )
    seconds = seconds_between("offered_at", "acknowledged_at")
    figures = acknowledged.aggregate(n=Count("pk"), percentiles=PercentileCont(MEDIAN_AND_P90, seconds))
    board.offer_to_acknowledgement = _duration(figures["n"], figures["percentiles"])


def _dispositions(board: Dashboard) -> None:
    window = board.window
    rows = (
        Encounter.objects.filter(window.within("started_at"), program=window.program, is_deleted=False)
        .order_by()
        .values("disposition", "transport_destination")
        .annotate(n=Count("pk"))
    )
    transported = Disposition.transported()
    counts: dict[str, int] = {}
    destinations: dict[str, int] = {}
    for row in rows:
        counts[row["disposition"]] = counts.get(row["disposition"], 0) + row["n"]
        if row["disposition"] in transported:
            destinations[row["transport_destination"]] = destinations.get(row["transport_destination"], 0) + row["n"]
    board.dispositions = _in_order_then_blank(counts, Disposition.values)
    board.transport_destinations = _in_order_then_blank(destinations, TransportDestination.values)


def _in_order_then_blank(counts: dict[str, int], order: list[str]) -> dict[str, int]:
    """The counts in the choices' order, then the records without a value."""
    ordered = {value: counts[value] for value in order if value in counts}
    if counts.get(""):
        ordered[""] = counts[""]
    return ordered


def _referrals(board: Dashboard, now: dt.datetime) -> None:
    window = board.window
    # When the person first got to the service (NULL when not yet): one grouped join, which
    # the aggregate below reads as a subquery (a correlated lookup would run once per count).
    first_connected = Min(
        "outcomes__observed_at",
        filter=Q(outcomes__is_deleted=False, outcomes__outcome__in=CONNECTED_OUTCOMES),
    )
    aggregates: dict[str, Any] = {"total": Count("pk")}
    for days in CONNECTION_DAYS:
        # Only referrals at least this old can have had the whole time to connect.
        old_enough = Q(created_at__lte=now - dt.timedelta(days=days))
        aggregates[f"old_{days}"] = Count("pk", filter=old_enough)
        aggregates[f"connected_{days}"] = Count(
            "pk", filter=old_enough & Q(first_connected__lte=F("created_at") + dt.timedelta(days=days))
        )
    figures = (
        Referral.objects.filter(window.within("created_at"), program=window.program, is_deleted=False)
        .annotate(first_connected=first_connected)
        .aggregate(**aggregates)
    )
    board.referrals = figures["total"]
    for days in CONNECTION_DAYS:
        board.referral_connection[days] = Rate(figures[f"connected_{days}"], figures[f"old_{days}"])
        board.referrals_too_recent[days] = figures["total"] - figures[f"old_{days}"]


def _steps(board: Dashboard, now: dt.datetime) -> None:
    window = board.window
    # On time: closed before the step counted as overdue (its due time plus the program's margin).
    overdue_at = F("due_at") + Func(F("overdue_margin_minutes"), template="make_interval(mins => %(expressions)s)")
    completed = Q(status=StepStatus.COMPLETED)
    figures = FollowUpStep.objects.filter(window.within("due_at"), program=window.program, due_at__lte=now).aggregate(
        due=Count("pk"),
        on_time=Count("pk", filter=completed & Q(closed_at__lte=overdue_at)),
        late=Count("pk", filter=completed & Q(closed_at__gt=overdue_at)),
        missed=Count("pk", filter=Q(status=StepStatus.MISSED)),
        open=Count("pk", filter=Q(status=StepStatus.PENDING)),
    )
    board.steps_due = figures["due"]
    board.steps_on_time = figures["on_time"]
    board.steps_late = figures["late"]
    board.steps_missed = figures["missed"]
    board.steps_open = figures["open"]


# Sections read at once, each on a database connection of its own: a section's aggregates
# mostly scan the range on one core of PostgreSQL (an ordered-set aggregate or a grouping by
# hour does not run in parallel), so two at a time keep both cores of a small server busy.
SECTIONS_AT_ONCE = 2


def program_dashboard(*, window: Window, now: dt.datetime) -> Dashboard:
    """Every figure of one program's dashboard for the window (the caller checked access)."""
    board = Dashboard(window)
    # Slowest first, so that the two lanes end together. Each fills its own figures.
    sections: list[Callable[[], None]] = [
        partial(_calls, board),
        partial(_eligible_and_on_scene, board),
        partial(_offer_to_acknowledgement, board),
        partial(_referrals, board, now),
        partial(_steps, board, now),
        partial(_dispositions, board),
    ]
    if connection.in_atomic_block:
        # Inside a transaction, read in it: another connection would not see what it wrote.
        for section in sections:
            section()
        return board
    # The request's own connection goes back to the pool meanwhile: requests holding theirs
    # could take the whole pool, and their sections would wait for a connection none gives back.
    connection.close()
    with ThreadPoolExecutor(max_workers=SECTIONS_AT_ONCE, thread_name_prefix="dashboard") as pool:
        for reading in [pool.submit(_on_a_connection_of_its_own, section) for section in sections]:
            reading.result()
    return board


def _on_a_connection_of_its_own(section: Callable[[], None]) -> None:
    try:
        section()
    finally:
        connections.close_all()  # this thread's connection goes back to the pool


# --- labels and the flat list of every figure (the CSV and the tables) ---------------------

RESPONSE_LABELS = dict(Response.choices)
REASON_LABELS = dict(UnservedReason.choices)
DISPOSITION_LABELS = {**dict(Disposition.choices), "": NOT_RECORDED}
DESTINATION_LABELS = {**dict(TransportDestination.choices), "": NOT_RECORDED}


@dataclass(frozen=True)
class FigureRow:
    """One number of the dashboard: ``figure`` names the chart or table, ``bucket`` its bar."""

    figure: str
    bucket: str
    series: str
    value: float | int | None


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 1)


def figure_rows(board: Dashboard) -> list[FigureRow]:
    rows = [FigureRow("calls", "total", "", board.calls)]
    for zone, counts in board.calls_by_zone:
        for response, count in counts.items():
            rows.append(FigureRow("calls_by_zone", zone, RESPONSE_LABELS.get(response, response), count))
    rows += [FigureRow("calls_by_hour", f"{hour:02d}:00", "", n) for hour, n in enumerate(board.calls_by_hour)]
    for value, label in Response.choices:
        rows.append(FigureRow("response_mix", label, "chosen", board.chosen_response.get(value, 0)))
        rows.append(FigureRow("response_mix", label, "recommended", board.recommended_response.get(value, 0)))
    rows.append(FigureRow("response_mix", "overridden by the dispatcher", "", board.overridden))
    rows += [
        FigureRow("eligible_calls", "eligible", "", board.eligible),
        FigureRow("eligible_calls", "served", "", board.eligible_served),
        FigureRow("eligible_calls", "not served", "", board.eligible_unserved),
        FigureRow("eligible_calls", "still open", "", board.eligible_open),
    ]
    for reason, count in board.eligible_unserved_by_reason.items():
        rows.append(FigureRow("not_served_reasons", REASON_LABELS.get(reason, reason), "", count))
    for name, duration in (
        ("offer_to_acknowledgement_seconds", board.offer_to_acknowledgement),
        ("call_to_on_scene_seconds", board.call_to_on_scene),
    ):
        rows += [
            FigureRow(name, "count", "", duration.count),
            FigureRow(name, "median", "", _round(duration.median_seconds)),
            FigureRow(name, "p90", "", _round(duration.p90_seconds)),
        ]
    for disposition, count in board.dispositions.items():
        rows.append(FigureRow("dispositions", DISPOSITION_LABELS.get(disposition, disposition), "", count))
    for destination, count in board.transport_destinations.items():
        rows.append(FigureRow("transported_to", DESTINATION_LABELS.get(destination, destination), "", count))
    rows.append(FigureRow("referrals", "made", "", board.referrals))
    for days, rate in board.referral_connection.items():
        name = f"referrals_connected_within_{days}_days"
        rows += [
            FigureRow(name, "connected", "", rate.numerator),
            FigureRow(name, "old enough to count", "", rate.denominator),
            FigureRow(name, "too recent", "", board.referrals_too_recent[days]),
            FigureRow(name, "percent", "", _round(rate.percent)),
        ]
    rows += [
        FigureRow("follow_up_steps", "due", "", board.steps_due),
        FigureRow("follow_up_steps", "completed on time", "", board.steps_on_time),
        FigureRow("follow_up_steps", "completed late", "", board.steps_late),
        FigureRow("follow_up_steps", "missed", "", board.steps_missed),
        FigureRow("follow_up_steps", "still open", "", board.steps_open),
        FigureRow("follow_up_steps", "percent on time", "", _round(board.steps_on_time_rate.percent)),
    ]
    return rows
