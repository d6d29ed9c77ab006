"""In headless Chromium, under the pages' CSP: a viewer finds the over-optimisation report of the planted
length-paying run from Rounds, sees proxy and gold drawn against sqrt(KL) with the peak marked, the length
symptom flagged and the largest proxy - gold gaps; a designer opens a flagged sample in the rubric editor."""

import pytest

from tests.conftest import sign_in
from tests.webapp.rounds_helpers import planted_samples

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.browser]


def test_it_opens_the_chart_and_the_flagged_samples(app_server, browser, people):
    from webapp.rounds.services import overopt_report_create

    report = overopt_report_create(project=people.project, user=people.users["bob"], name="length run",
                                   gold_kind="lm_judge", gold_name="content judge", samples=planted_samples())
    page = browser.new_page()
    violations: list[str] = []
    page.on("console", lambda msg: violations.append(msg.text) if "Content Security Policy" in msg.text else None)
    sign_in(page, app_server, "dave")  # a viewer
    page.goto(f"{app_server}/projects/{people.project.pk}/")
    page.click("nav.subnav a:has-text('Rounds')")
    page.click("#overopt-reports a:has-text('length run')")
    page.wait_for_selector("svg#overopt-chart")
    assert page.locator("svg#overopt-chart circle.proxy-point").count() == 5
    assert page.locator("svg#overopt-chart circle.gold-point").count() == 5
    assert page.locator("#peak-line").count() == 1
    assert page.locator("#peak").get_attribute("data-flagged") == "true"
    assert "gold peaks at checkpoint-200" in page.locator("#peak").inner_text()
    # the gold line's highest point (smallest y) is at the peak line
    golds = page.locator("svg#overopt-chart circle.gold-point")
    highest = min(range(5), key=lambda k: float(golds.nth(k).get_attribute("cy")))
    assert golds.nth(highest).get_attribute("cx") == page.locator("#peak-line").get_attribute("x1")
    assert page.locator("#symptoms li[data-kind=length]").get_attribute("data-flagged") == "true"
    gaps = page.locator("#gap-samples tr.gap-sample")
    assert gaps.count() == 20
    assert gaps.first.locator("td").first.inner_text() == "checkpoint-400"
    assert "length_bonus" in gaps.first.inner_text()
    assert violations == []

    designer = browser.new_page()
    designer.on("console", lambda msg: violations.append(msg.text) if "Content Security Policy" in msg.text else None)
    sign_in(designer, app_server, "bob")
    designer.goto(f"{app_server}/projects/{people.project.pk}/rounds/overoptimization/{report.pk}/")
    designer.click("#gap-samples tr.gap-sample >> nth=0 >> a.iterate")
    designer.wait_for_selector("#rubric-form")
    designer.fill("input[name='criteria[0].name']", "short")
    designer.select_option("select[name='criteria[0].rule.kind']", "length")
    designer.wait_for_selector("input[name='criteria[0].rule.max']")
    designer.fill("input[name='criteria[0].rule.max']", "200")
    designer.fill("#id_name", "Concise")
    designer.wait_for_selector("#preview-table tr[data-response^='flagged checkpoint-400']")
    assert violations == []
