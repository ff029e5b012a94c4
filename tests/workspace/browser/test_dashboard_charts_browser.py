"""The dashboard's charts in a real browser, with known data: they draw the exact numbers
(heights in proportion), under the admin's content security policy."""

from __future__ import annotations

import pytest

from apps.accounts.models import Program, Role
from tests.workspace.browser.conftest import AdminBrowser
from tests.workspace.dashboard_data import known_program, staff_member

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.live]


def test_the_dashboards_charts_draw_the_known_numbers(admin_browser: AdminBrowser, program: Program) -> None:
    known_program(program)
    page = admin_browser.page

    admin_browser.sign_in(staff_member(program, Role.SUPERVISOR))
    page.click("#workspace-dashboard-link a")
    admin_browser.open(f"/admin/dashboard/?program={program.slug}&start=2026-11-01&end=2026-11-10")
    admin_browser.screenshot("dashboard-known-data")

    assert page.locator("svg[data-chart]").count() == 7
    hours = page.locator("svg[data-chart=calls-by-hour] rect[data-value]").evaluate_all(
        "bars => bars.map(bar => Number(bar.dataset.value))"
    )
    assert len(hours) == 24 and sum(hours) == 9
    # Drawn, not just present: the 09:00 column (two calls) is twice the 10:00 column (one).
    nine = page.locator("svg[data-chart=calls-by-hour] rect[data-bucket='09']").bounding_box()
    ten = page.locator("svg[data-chart=calls-by-hour] rect[data-bucket='10']").bounding_box()
    assert ten["height"] > 0 and nine["height"] == pytest.approx(2 * ten["height"], rel=0.05)
    zones = page.locator("svg[data-chart=calls-by-zone] rect[data-value]").evaluate_all(
        "bars => bars.map(bar => [bar.dataset.series, Number(bar.dataset.value)])"
    )
    assert zones == [
        ["EMT + mental-health clinician", 5],
        ["EMT + mental-health clinician", 1],
        ["Community response", 2],
        ["Police (outside this system)", 1],
    ]
    assert page.locator("svg[data-chart=calls-by-hour] title").first.text_content() == "Calls by hour of day"
    admin_browser.check_no_problems()
