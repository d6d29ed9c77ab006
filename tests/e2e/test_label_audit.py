"""In headless Chromium, under the pages' CSP: a designer opens the label audit from the Agreement page, sees the
planted flipped labels flagged with their counts, sends them back for adjudication (the confirm step shows how
many comparisons and labels it touches), and the database shows the overlap raised for those comparisons only,
none of them offered to the annotator who labelled them, each offered to a different one."""

import pytest

from tests.conftest import sign_in
from tests.webapp.label_quality_helpers import audited_ensemble as _ensemble
from tests.webapp.label_quality_helpers import carol_labelled as _labelled
from webapp.annotation.models import Comparison
from webapp.annotation.services import assignment_next_item

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.browser]


def test_it_sends_the_flagged_labels_to_adjudication_after_confirming_the_count(app_server, browser, people):
    comparisons = _labelled(people)  # carol labelled 8 pairs; 1, 4 and 6 are planted flips, 7 is ambiguous
    job = _ensemble(people, comparisons)
    flagged = {comparisons[i].pk for i in (1, 4, 6, 7)}
    page = browser.new_page()
    violations = []
    page.on("console", lambda msg: violations.append(msg.text) if "Content Security Policy" in msg.text else None)
    sign_in(page, app_server, "bob")
    page.goto(f"{app_server}/projects/{people.project.pk}/agreement/")
    page.click("#label-quality-links >> text=Label audit")
    page.select_option("#ensemble_job_id", str(job.pk))
    page.click("#audit-pick button[type=submit]")
    page.wait_for_selector("#audit-flagged")
    shown = {int(row.get_attribute("data-comparison")): row.get_attribute("data-flag")
             for row in page.query_selector_all("#audit-flagged tr[data-comparison]")}
    assert shown == {comparisons[1].pk: "probably_wrong", comparisons[4].pk: "probably_wrong",
                     comparisons[6].pk: "probably_wrong", comparisons[7].pk: "ambiguous"}
    assert page.inner_text("#audit-summary [data-count=probably_wrong]") == "3"
    assert page.inner_text("#audit-summary [data-count=ambiguous]") == "1"
    assert "8 decisive pair labels" in page.inner_text("#audit-summary")

    page.click("#audit-send button[type=submit]")  # step one: what it would touch, nothing changed yet
    page.wait_for_selector("#audit-confirm")
    assert page.inner_text("#audit-confirm [data-count=comparisons]") == "4"
    assert page.inner_text("#audit-confirm [data-count=labels]") == "4"
    assert set(Comparison.objects.filter(project=people.project).values_list("overlap", flat=True)) == {1}
    page.click("#audit-confirm-send")
    page.wait_for_selector("text=Sent 4 comparisons (4 flagged labels) back for adjudication")
    assert violations == []

    assert {c.pk for c in Comparison.objects.filter(project=people.project, overlap=2)} == flagged
    assert Comparison.objects.filter(project=people.project, overlap=1).count() == 4
    assert assignment_next_item(project=people.project, user=people.users["carol"]) is None
    from tests.webapp.label_quality_helpers import label_next

    got = {label_next(people.project, people.users["bob"], "a") for _ in flagged}
    assert got == flagged
    assert assignment_next_item(project=people.project, user=people.users["bob"]) is None
