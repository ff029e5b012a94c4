"""The program dashboard page of the admin (``/admin/dashboard/``): parse, authorise, render.

The figures come from ``apps.workspace.dashboard``; this module only picks the program and the
dates, draws the charts and writes the CSV. Aggregates only, so viewing it reads no health
record and writes no audit row.
"""

from __future__ import annotations

import csv
import datetime as dt
from typing import Any
from zoneinfo import ZoneInfo

from django import forms
from django.contrib import admin
from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.template.response import TemplateResponse
from django.urls import URLPattern, URLResolver, path
from django.utils import timezone

from apps.accounts.models import Program, User
from apps.common.api.errors import error_body
from apps.workspace import charts
from apps.workspace.dashboard import (
    DESTINATION_LABELS,
    DISPOSITION_LABELS,
    REASON_LABELS,
    RESPONSE_LABELS,
    Dashboard,
    Window,
    dashboard_programs,
    default_window,
    figure_rows,
    program_dashboard,
)

# A year and a day: enough for an annual report, bounded so one request stays cheap.
MAX_DAYS = 366
# The range's arithmetic (a default length back from the end, the midnight after the last
# day) must stay inside the calendar: a date at its very ends is refused, not a 500.
FIRST_DAY = dt.date.min + dt.timedelta(days=MAX_DAYS)
LAST_DAY = dt.date.max - dt.timedelta(days=1)
FORMATS = ("html", "csv")


class DashboardForm(forms.Form):
    start = forms.DateField(required=False, label="From")
    end = forms.DateField(required=False, label="To (inclusive)")
    format = forms.ChoiceField(required=False, choices=[(name, name) for name in FORMATS])

    def __init__(self, *args: Any, default: Window, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.default = default

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean() or {}
        if "start" in self.errors or "end" in self.errors:
            return cleaned
        given_start, given_end = cleaned.get("start"), cleaned.get("end")
        for name, given in (("start", given_start), ("end", given_end)):
            if given is not None and not FIRST_DAY <= given <= LAST_DAY:
                self.add_error(name, f"Give a date from {FIRST_DAY} to {LAST_DAY}.")
        if "start" in self.errors or "end" in self.errors:
            return cleaned
        # Only a start: from then to today. Only an end: the default's length up to it.
        end = given_end or max(self.default.end, given_start or self.default.end)
        start = given_start or (end - (self.default.end - self.default.start))
        if end < start:
            self.add_error("end", "The end date is before the start date.")
        elif (end - start).days + 1 > MAX_DAYS:
            self.add_error("end", f"At most {MAX_DAYS} days at once.")
        cleaned["start"], cleaned["end"] = start, end
        return cleaned


def _pick_program(request: HttpRequest, programs: list[Program]) -> Program:
    wanted = request.GET.get("program")
    if not wanted:
        return programs[0]
    for program in programs:
        if program.slug == wanted:
            return program
    # Another program's dashboard, or none at all: the same answer, so it confirms nothing.
    raise Http404("No such program.")


def _bad_request(request: HttpRequest, form: DashboardForm, context: dict[str, Any]) -> HttpResponse:
    errors = [
        {"field": field_name, "code": error.code or "invalid", "detail": " ".join(error.messages)}
        for field_name, field_errors in form.errors.as_data().items()
        for error in field_errors
    ]
    if request.GET.get("format") == "csv" or "format" in form.errors:
        return JsonResponse(error_body(400, "invalid_input", "Invalid dashboard filter.", errors), status=400)
    return TemplateResponse(request, "workspace/dashboard.html", context, status=400)


def dashboard_view(request: HttpRequest) -> HttpResponse:
    user = request.user
    programs = list(dashboard_programs(user)) if isinstance(user, User) else []
    if not programs:
        raise PermissionDenied("The dashboard is for the program's supervisors and administrators.")
    program = _pick_program(request, programs)
    # The figures' days and hours are the program's: so is every time on the page, and its header says so.
    with timezone.override(ZoneInfo(program.time_zone)):
        response = _program_dashboard(request, programs, program)
        return response.render() if isinstance(response, TemplateResponse) else response


def _program_dashboard(request: HttpRequest, programs: list[Program], program: Program) -> HttpResponse:
    now = timezone.now()
    form = DashboardForm(request.GET, default=default_window(program, now))
    context: dict[str, Any] = {
        **admin.site.each_context(request),
        "title": f"Program dashboard — {program.name}",
        "programs": programs,
        "program": program,
        "form": form,
    }
    if not form.is_valid():
        return _bad_request(request, form, context)
    window = Window(program, form.cleaned_data["start"], form.cleaned_data["end"])
    board = program_dashboard(window=window, now=now)
    if form.cleaned_data.get("format") == "csv":
        return _csv(board)
    context.update({"board": board, "window": window, **_charts(board)})
    return TemplateResponse(request, "workspace/dashboard.html", context)


# --- CSV -----------------------------------------------------------------------------------


def _safe_cell(value: Any) -> Any:
    # A zone named "=HYPERLINK(...)" must not become a formula in the spreadsheet it is opened in.
    if isinstance(value, str) and value[:1] in ("=", "+", "-", "@", "\t", "\r"):
        return "'" + value
    return "" if value is None else value


def _csv(board: Dashboard) -> HttpResponse:
    window = board.window
    response = HttpResponse(content_type="text/csv; charset=utf-8")
    filename = f"dashboard-{window.program.slug}-{window.start.isoformat()}-{window.end.isoformat()}.csv"
    response["Content-Disposition"] = f'attachment; filename="{filename}"'
    writer = csv.writer(response)
    writer.writerow(["program", "start", "end", "figure", "bucket", "series", "value"])
    for row in figure_rows(board):
        writer.writerow(
            [
                _safe_cell(window.program.slug),
                window.start.isoformat(),
                window.end.isoformat(),
                row.figure,
                _safe_cell(row.bucket),
                _safe_cell(row.series),
                _safe_cell(row.value),
            ]
        )
    return response


# --- charts --------------------------------------------------------------------------------


def _charts(board: Dashboard) -> dict[str, Any]:
    responses = [value for value in RESPONSE_LABELS if any(value in counts for _zone, counts in board.calls_by_zone)]
    served_rows: list[tuple[str, dict[str, float]]] = [
        ("Served", {"Served": board.eligible_served}),
        ("Not served", {REASON_LABELS.get(k, k): v for k, v in board.eligible_unserved_by_reason.items()}),
        ("Still open", {"Still open": board.eligible_open}),
    ]
    return {
        "response_mix": [
            (label, board.recommended_response.get(value, 0), board.chosen_response.get(value, 0))
            for value, label in RESPONSE_LABELS.items()
        ],
        "unserved_reasons": [(REASON_LABELS.get(k, k), v) for k, v in board.eligible_unserved_by_reason.items()],
        "connection_rows": [
            (days, rate, board.referrals_too_recent[days]) for days, rate in board.referral_connection.items()
        ],
        "zone_chart": charts.bar_chart(
            name="calls-by-zone",
            title="Calls by zone and response model",
            description=f"{board.calls} calls received, by zone, each bar split by the response model chosen.",
            rows=[
                (zone, {RESPONSE_LABELS[r]: counts[r] for r in responses if r in counts})
                for zone, counts in board.calls_by_zone
            ],
            series=[RESPONSE_LABELS[r] for r in responses],
        ),
        "hour_chart": charts.histogram(
            name="calls-by-hour",
            title="Calls by hour of day",
            description=f"Calls received in each hour of the day, {board.window.program.time_zone} time.",
            values=[(f"{hour:02d}", n) for hour, n in enumerate(board.calls_by_hour)],
        ),
        "response_chart": charts.bar_chart(
            name="response-mix",
            title="Response model chosen",
            description=f"The response chosen for each call; {board.overridden} differed from triage's recommendation.",
            rows=[(RESPONSE_LABELS[value], {"Calls": n}) for value, n in board.chosen_response.items()],
        ),
        "served_chart": charts.bar_chart(
            name="eligible-served",
            title="Eligible calls served and not served",
            description=f"{board.eligible} calls eligible for a team: served, not served (by reason), still open.",
            rows=served_rows,
            series=["Served", *served_rows[1][1].keys(), "Still open"],
        ),
        "disposition_chart": charts.bar_chart(
            name="dispositions",
            title="Encounter dispositions",
            description="What the team's encounters ended with.",
            rows=[(DISPOSITION_LABELS.get(value, value), {"Encounters": n}) for value, n in board.dispositions.items()],
        ),
        "destination_chart": charts.bar_chart(
            name="transported-to",
            title="Transported to",
            description="Where the transported encounters took the person: a community location or a hospital.",
            rows=[
                (DESTINATION_LABELS.get(value, value), {"Encounters": n})
                for value, n in board.transport_destinations.items()
            ],
        ),
        "steps_chart": charts.bar_chart(
            name="follow-up-steps",
            title="Follow-up steps that came due",
            description=f"{board.steps_due} steps came due: completed on time, late, missed or still open.",
            rows=[
                ("Completed on time", {"Steps": board.steps_on_time}),
                ("Completed late", {"Steps": board.steps_late}),
                ("Missed", {"Steps": board.steps_missed}),
                ("Still open", {"Steps": board.steps_open}),
            ],
        ),
    }


# --- the admin URL -------------------------------------------------------------------------


def install_dashboard_url(site: admin.AdminSite) -> None:
    """Add ``admin:dashboard`` to the site's URLs (behind its login and one-time code)."""
    site_urls = site.get_urls

    def get_urls() -> list[URLPattern | URLResolver]:
        dashboard = path("dashboard/", site.admin_view(dashboard_view), name="dashboard")
        return [dashboard, *site_urls()]

    # The site is Django's default instance (its class becomes the OTP site in config.urls),
    # so the URL is added on the instance rather than by subclassing it.
    site.get_urls = get_urls  # type: ignore[method-assign]
