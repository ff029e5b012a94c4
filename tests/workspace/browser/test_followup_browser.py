"""A case manager works an overdue follow-up in a real browser, end to end."""

from __future__ import annotations

import pytest

from apps.accounts.models import Program
from apps.care.models import Referral, ReferralStatus
from apps.followups.models import ContactAttempt
from apps.workspace.selectors import queue_queryset
from tests.workspace.browser.conftest import AdminBrowser
from tests.workspace.scenario import casework, workday

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.live]


def overdue_count_on_home(browser: AdminBrowser) -> int:
    return int(browser.page.inner_text("#queue-steps_overdue .queue-count").strip())


def test_a_case_manager_works_an_overdue_follow_up_from_the_home_page(
    admin_browser: AdminBrowser, program: Program
) -> None:
    work = casework(workday(program))
    manager = work.day.case_manager
    step = work.overdue_step()
    page = admin_browser.page

    admin_browser.sign_in(manager)
    before = overdue_count_on_home(admin_browser)
    admin_browser.screenshot("home")
    assert before == queue_queryset(user=manager, key="steps_overdue").count() > 0

    with page.expect_navigation():
        page.click("#queue-steps_overdue th a")
    admin_browser.screenshot("overdue-queue")
    row = page.locator("#result_list tbody tr", has=page.locator(f'a.timeline-link[href*="/{step.pk}/"]'))
    with page.expect_navigation():
        row.locator("th a").click()
    assert f"/followupstep/{step.pk}/change/" in page.url
    admin_browser.screenshot("follow-up-step")

    with page.expect_navigation():
        page.click("#open-timeline")
    assert page.url.endswith(f"/followupstep/{step.pk}/timeline/")
    assert "Rosa Diaz" in page.inner_text("#timeline-person")
    assert "Calm on arrival." in page.inner_text(".timeline-note")
    admin_browser.screenshot("timeline")

    attempt = page.locator("#form-attempt")
    attempt.locator("select[name=attempt-method]").select_option("phone")
    attempt.locator("select[name=attempt-result]").select_option("reached")
    attempt.locator("textarea[name=attempt-notes]").fill("Talked for ten minutes; has an intake on Friday.")
    with page.expect_navigation():
        attempt.locator("input[type=submit]").click()
    assert "Recorded a contact attempt." in page.inner_text(".messagelist")
    assert "Talked for ten minutes" in page.inner_text("#timeline-attempts")
    admin_browser.screenshot("timeline-attempt-recorded")

    outcome = page.locator("#form-outcome")
    outcome.locator("select[name=outcome-referral]").select_option(str(work.referral_id))
    outcome.locator("select[name=outcome-outcome]").select_option("connected")
    outcome.locator("textarea[name=outcome-details]").fill("Clinic confirmed the intake.")
    with page.expect_navigation():
        outcome.locator("input[type=submit]").click()
    assert "Recorded a referral outcome." in page.inner_text(".messagelist")
    assert "Connected" in page.inner_text(f"#referral-{work.referral_id} .referral-status")
    admin_browser.screenshot("timeline-outcome-recorded")

    with page.expect_navigation():
        page.click(".breadcrumbs a:first-child")
    after = overdue_count_on_home(admin_browser)
    admin_browser.screenshot("home-after")

    assert after < before
    assert after == queue_queryset(user=manager, key="steps_overdue").count()
    assert ContactAttempt.objects.get(step=step).created_by == manager
    assert Referral.objects.get(pk=work.referral_id).status == ReferralStatus.CONNECTED
    admin_browser.check_no_problems()
