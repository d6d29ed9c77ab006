"""In headless Chromium: add a judge and test its connection, get the budget error on the plan form,
compute a plan, approve it, and watch the LM side get labelled by a real worker."""

import pytest

from rlcore.judges.testing_server import ChatCompletionsServer
from tests.conftest import sign_in, wait_for
from tests.webapp.routing_helpers import judge_policy, keyword_rows, pairs_dataset

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.browser]
SECRET = "sk-browser-3c4d5e6f7a8b"



def test_it_sets_up_a_judge_plans_with_a_budget_and_approves(app_server, browser, celery_workers, people):
    pairs_dataset(project=people.project, user=people.users["alice"], rows=keyword_rows(8, refuse_every=4))
    base = f"{app_server}/projects/{people.project.pk}"
    page = browser.new_page()
    sign_in(page, app_server, "bob")
    with ChatCompletionsServer(judge_policy, api_key=SECRET) as server:
        page.goto(f"{base}/judging/new/")
        page.fill("#id_name", "loopback")
        page.fill("#id_endpoint", server.base_url)
        page.fill("#id_model", "judge-1")
        page.fill("#id_api_key", SECRET)
        page.click("button:has-text('Save')")
        page.wait_for_selector("#key-source")
        assert page.locator("#key-source").inner_text() == "stored (encrypted)"
        page.click("#test-connection")
        page.wait_for_selector("#test-result [data-ok='true']")
        assert SECRET not in page.content()

        page.goto(f"{base}/routing/")
        page.fill("#id_budget", "12")
        page.select_option("#id_judge_config", label="loopback")
        page.click("button:has-text('Compute the plan')")
        assert "12 is more than the 8 comparisons" in page.locator("#error-budget").inner_text()
        page.fill("#id_budget", "25%")
        page.select_option("#id_strategy", "random")
        page.click("button:has-text('Compute the plan')")
        page.wait_for_selector("#plan-summary")
        assert page.locator("#n-human").inner_text() == "2" and page.locator("#n-lm").inner_text() == "6"
        page.click("#approve")
        page.wait_for_selector("#plan-job")

        def settled():
            page.reload()
            return "lm_pending" not in page.locator("#decision-counts").inner_text()

        wait_for(settled, 60, 1.0, "the LM side to be labelled")
    rows = page.locator("#decisions tr[data-route='lm']")
    statuses = {rows.nth(i).get_attribute("data-status") for i in range(rows.count())}
    assert statuses <= {"lm_labelled", "returned"} and "lm_labelled" in statuses
    returned = page.locator("#decisions tr[data-status='returned'] .reason").all_inner_texts()
    assert all("judge refused" in text for text in returned)
    assert SECRET not in page.content()
