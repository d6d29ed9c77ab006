"""In headless Chromium: sign in, create a project, see it listed; launch a job and watch it finish."""

import pytest

from tests.conftest import sign_in

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.browser]



def test_it_signs_in_creates_a_project_and_lists_it(app_server, browser, people):
    page = browser.new_page()
    sign_in(page, app_server, "bob")
    page.fill("#id_name", "Code review preferences")
    page.click("text=Create project")
    page.wait_for_selector("h1:has-text('Code review preferences')")
    page.click("text=Projects")
    rows = page.locator("#project-list").inner_text()
    assert "Code review preferences" in rows and "owner" in rows
    assert "Helpfulness" in rows  # bob designs alice's project too
    assert "secret" not in rows


def test_it_shows_the_error_for_a_wrong_password(app_server, browser, people):
    page = browser.new_page()
    page.goto(app_server + "/accounts/login/")
    page.fill("#id_username", "bob")
    page.fill("#id_password", "wrong")
    page.click("button[type=submit]")
    assert "correct username and password" in page.locator("[role=alert]").inner_text()


def test_it_launches_a_job_and_the_page_updates_until_it_succeeds(app_server, browser, celery_workers, people):
    page = browser.new_page()
    sign_in(page, app_server, "alice")
    page.goto(f"{app_server}/projects/{people.project.pk}/jobs/")
    page.fill("#id_steps", "3")
    page.fill("#id_interval", "0.3")
    page.click("text=Launch")
    page.wait_for_selector("#job-state")
    # htmx polls the status fragment; no reload happens in between.
    page.wait_for_selector("#job-state:has-text('succeeded')", timeout=60_000)
    assert "reward" in page.locator("#latest-metrics").inner_text()
