"""In headless Chromium: a plan for a pool above ROUTING_INLINE_POOL shows as pending, polls (htmx, strict
CSP, no violations) while a real worker computes it, and turns into the ready plan without a reload."""

import pytest

from tests.conftest import sign_in
from tests.webapp.routing_helpers import keyword_rows, pairs_dataset
from webapp.routing.models import RoutingPlan
from webapp.routing.services import routing_plan_create

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.browser]


def test_it_shows_a_background_plan_pending_then_ready(app_server, browser, celery_workers, people, settings):
    pairs_dataset(project=people.project, user=people.users["alice"], rows=keyword_rows(20))
    page = browser.new_page()
    violations = []
    page.on("console", lambda msg: violations.append(msg.text) if "Content Security Policy" in msg.text else None)
    sign_in(page, app_server, "bob")
    settings.ROUTING_INLINE_POOL = 5  # this process creates the plan: 20 pooled go to the job
    plan = routing_plan_create(project=people.project, user=people.users["bob"], budget="5", strategy="random")
    assert plan.status == "pending"
    page.goto(f"{app_server}/projects/{people.project.pk}/routing/plans/{plan.pk}/")
    first = page.locator("#plan-progress").get_attribute("data-status")
    # The child takes seconds to start (imports): the page is served while the plan is pending, so the
    # ready plan below arrives through the poll (HX-Refresh), not through a reload by the test.
    assert first == "pending", "the page was served after the plan was ready: polling not exercised"
    assert page.locator("#plan-summary").count() == 0 and page.locator("#approve").count() == 0
    page.wait_for_selector("#plan-summary", timeout=120_000)
    assert page.locator("#n-human").inner_text() == "5" and page.locator("#n-lm").inner_text() == "15"
    assert page.locator("#plan-progress[data-status='draft']").count() == 1
    assert page.locator("#decisions tr[data-route='human']").count() == 5
    assert RoutingPlan.objects.get(pk=plan.pk).status == "draft"
    assert violations == []
