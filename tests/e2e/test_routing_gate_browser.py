"""In headless Chromium: asking for topk on a pilot too small to show a gain gives a random plan
that says why, with the held-out gain over random, its interval and the counts it rests on."""

import pytest

from tests.conftest import sign_in
from tests.webapp.routing_helpers import keyword_rows, pairs_dataset
from webapp.annotation.models import Comparison, LabelSource, PreferenceLabel
from webapp.annotation.services import lm_label_create

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.browser]


def test_it_shows_why_topk_fell_back_and_what_the_gain_rests_on(app_server, browser, people):
    pairs_dataset(project=people.project, user=people.users["alice"], rows=keyword_rows(60, biased_every=3))
    comparisons = list(Comparison.objects.filter(project=people.project).order_by("id"))
    for i, c in enumerate(comparisons[:40]):
        truth = "a" if "thanks" in c.responses()[0].text else "b"
        PreferenceLabel.objects.create(comparison=c, source=LabelSource.HUMAN, annotator=people.users["carol"],
                                       choice=truth, strength=1)
        lm_label_create(comparison=c, choice=truth if i % 3 != 2 else "a", model_version="m",
                        provenance={"position_bias": i % 3 == 2, "confidence": 0.5 if i % 3 == 2 else 0.9})
    Comparison.objects.filter(pk__in=[c.pk for c in comparisons[:40]]).update(human_label_count=1)
    page = browser.new_page()
    sign_in(page, app_server, "bob")
    page.goto(f"{app_server}/projects/{people.project.pk}/routing/")
    page.fill("#id_budget", "5")
    page.select_option("#id_strategy", "topk")
    page.click("button:has-text('Compute the plan')")
    page.wait_for_selector("#plan-summary")
    assert "random" in page.locator("#plan-strategy").inner_text()
    assert "asked for topk; fell back" in page.locator("#plan-strategy").inner_text()
    reason = page.locator("#fallback-reason").inner_text()
    assert "rests on 40 pilot comparisons" in reason and "at least 100 are needed" in reason
    gain = page.locator("#gain-over-random").inner_text()
    assert "95 % interval" in gain and "Rests on 40 pilot comparisons" in gain and "40 non-tie human labels" in gain
    assert page.locator("#n-human").inner_text() == "5"
