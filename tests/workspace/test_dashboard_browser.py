"""The dashboard in a real browser against the real ASGI server: the charts draw, with data,
under the admin's content security policy (no inline script or style to be refused)."""

from __future__ import annotations

import shutil

import pytest
from django_otp.oath import TOTP
from django_otp.plugins.otp_totp.models import TOTPDevice
from playwright.sync_api import Page, sync_playwright

from apps.accounts.models import Program, Role
from tests.accounts.factories import PASSWORD
from tests.live import AsgiServer
from tests.workspace.dashboard_data import known_program, staff_member

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.mark.django_db(transaction=True)
def test_the_dashboards_charts_draw_with_their_data(program: Program, asgi: AsgiServer) -> None:
    known_program(program)
    supervisor = staff_member(program, Role.SUPERVISOR)
    device = TOTPDevice.objects.create(user=supervisor, name="authenticator", confirmed=True)
    code = str(TOTP(device.bin_key, device.step, device.t0, device.digits, device.drift).token()).zfill(device.digits)
    # Playwright's sync API runs an event loop: every database call happens before it starts.
    with sync_playwright() as playwright:
        # The system's Chromium when there is one; else the one Playwright installed.
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            check_dashboard(browser.new_page(), asgi, program.slug, supervisor.username, device.persistent_id, code)
        finally:
            browser.close()


def check_dashboard(page: Page, asgi: AsgiServer, program_slug: str, username: str, device_id: str, code: str) -> None:
    refused: list[str] = []
    page.on(
        "console", lambda message: refused.append(message.text) if "Content Security Policy" in message.text else None
    )

    page.goto(f"{asgi.http_url}/admin/login/?next=/admin/")
    # The admin asks for the password first; then it offers the user's devices for the code.
    page.fill("#id_username", username)
    page.fill("#id_password", PASSWORD)
    page.click("input[type=submit][value='Log in']")
    page.fill("#id_password", PASSWORD)
    page.select_option("#id_otp_device", device_id)
    page.fill("#id_otp_token", code)
    page.click("input[type=submit][value='Log in']")
    page.wait_for_url(f"{asgi.http_url}/admin/")
    page.click("#workspace-dashboard-link a")
    page.goto(f"{page.url}?program={program_slug}&start=2026-11-01&end=2026-11-10")

    charts = page.locator("svg[data-chart]")
    assert charts.count() == 6
    hours = page.locator("svg[data-chart=calls-by-hour] rect[data-value]")
    assert hours.count() == 24
    assert sum(int(hours.nth(i).get_attribute("data-value") or 0) for i in range(24)) == 9
    # Drawn, not just present: the 09:00 column (two calls) is the tallest and has a height on screen.
    nine = page.locator("svg[data-chart=calls-by-hour] rect[data-bucket='09']").bounding_box()
    ten = page.locator("svg[data-chart=calls-by-hour] rect[data-bucket='10']").bounding_box()
    assert nine is not None and ten is not None
    assert nine["height"] == pytest.approx(2 * ten["height"], rel=0.05) and ten["height"] > 0
    harlem = page.locator("svg[data-chart=calls-by-zone] rect[data-value]").first.bounding_box()
    assert harlem is not None and harlem["width"] > 0
    assert page.locator("svg[data-chart=calls-by-hour] title").first.text_content() == "Calls by hour of day"
    assert refused == []
