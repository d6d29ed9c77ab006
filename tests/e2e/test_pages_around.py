"""The pages around the dashboards, as a newcomer walks them (issue 15): refusals inside the layout,
confirmations and layouts that fit, sensible defaults, and worker logs that stay readable.

Screenshots go to $PAGE_SHOTS when it is set (to look at a page by eye)."""

import os
import time

import pytest

from tests.conftest import sign_in, wait_for

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.browser]


def _shot(page, name: str) -> None:
    if os.environ.get("PAGE_SHOTS"):
        page.screenshot(path=os.path.join(os.environ["PAGE_SHOTS"], f"{name}.png"), full_page=True)


def _fits_horizontally(page) -> bool:
    return page.evaluate("() => document.documentElement.scrollWidth <= document.documentElement.clientWidth")


def test_it_refuses_a_viewer_inside_the_layout_and_hides_annotate(app_server, browser, people):
    page = browser.new_page()
    sign_in(page, app_server, "dave")
    page.goto(f"{app_server}/projects/{people.project.pk}/")
    assert page.locator("nav.subnav a:has-text('Agreement')").count() == 1
    assert page.locator("nav.subnav a:has-text('Annotate')").count() == 0
    response = page.goto(f"{app_server}/projects/{people.project.pk}/annotate/")
    assert response.status == 403
    _shot(page, "403")
    assert page.locator("header.top a.brand").is_visible()
    assert page.locator("nav.subnav a.project-name").inner_text() == "Helpfulness"
    assert "needs the owner, designer or annotator role" in page.locator("#refusal").inner_text()


def test_it_keeps_the_bookkeeping_tasks_out_of_the_worker_log(celery_workers, process_logs):
    from django.conf import settings

    log = process_logs / "worker-default.log"
    periodic = [entry["task"] for entry in settings.CELERY_BEAT_SCHEDULE.values()]
    # Beat sends each bookkeeping task every few seconds; wait for at least two rounds of the slowest.
    time.sleep(2 * max(float(entry["schedule"]) for entry in settings.CELERY_BEAT_SCHEDULE.values()) + 1)
    text = log.read_text(errors="replace")
    assert " ready." in text
    # (the start-up banner lists every task once, as "  . name")
    noisy = [line for line in text.splitlines()
             if any(task in line for task in periodic) and not line.strip().startswith(". ")]
    assert noisy == [], noisy[:5]
