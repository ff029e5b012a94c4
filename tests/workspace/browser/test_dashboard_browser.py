"""The program dashboard (/admin/dashboard/) in a real browser, as a supervisor sees it
after a working day of the program: charts (``[data-chart]``) carrying values
(``[data-value]``), at least one of them above zero."""

from __future__ import annotations

import pytest

from apps.accounts.models import Program
from tests.workspace.browser.conftest import AdminBrowser
from tests.workspace.scenario import casework, workday

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.live]

DASHBOARD = "/admin/dashboard/"


def test_a_supervisor_sees_the_programs_dashboard_with_charts_that_have_values(
    admin_browser: AdminBrowser, program: Program
) -> None:
    day = casework(workday(program)).day
    page = admin_browser.page

    admin_browser.sign_in(day.supervisor)
    response = page.goto(admin_browser.url(DASHBOARD))
    assert response is not None
    assert response.status == 200, f"{DASHBOARD} answered {response.status}"
    admin_browser.screenshot("dashboard")

    charts = page.locator("[data-chart]")
    assert charts.count() > 0, "the dashboard shows no [data-chart] element"
    values = [
        float(value)
        for value in page.locator("[data-chart][data-value], [data-chart] [data-value]").evaluate_all(
            "elements => elements.map(element => element.dataset.value)"
        )
    ]
    assert values, "no chart carries a [data-value]"
    assert max(values) > 0, f"every chart value is zero: {values}"
    admin_browser.check_no_problems()
