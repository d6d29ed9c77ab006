"""In headless Chromium, under the Content-Security-Policy every page is sent with: the pages run no
inline script the policy would block, and a destructive form still asks before it submits."""

import pytest

from tests.conftest import sign_in
from webapp.datasets.models import Dataset, Prompt, Response

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.browser]



def _dataset(people) -> Dataset:
    dataset = Dataset.objects.create(project=people.project, name="to delete", source_format="jsonl",
                                     status="ready", created_by=people.users["alice"])
    prompt = Prompt.objects.create(dataset=dataset, source_line=1, text="Question")
    Response.objects.create(prompt=prompt, text="answer")
    return dataset


def test_the_pages_break_no_rule_of_the_content_security_policy(app_server, browser, people):
    _dataset(people)
    page = browser.new_page()
    violations: list[str] = []
    page.on("console", lambda msg: violations.append(msg.text) if "Content Security Policy" in msg.text else None)
    sign_in(page, app_server, "alice")
    project = f"{app_server}/projects/{people.project.pk}"
    for path in ("/", "/datasets/", "/rubrics/", "/comparisons/", "/annotate/", "/agreement/", "/judging/",
                 "/routing/", "/training/", "/jobs/", "/export/"):
        response = page.goto(project + path if path != "/" else app_server + "/")
        assert response.status < 500, path
        assert "script-src 'self'" in response.headers["content-security-policy"]
        page.wait_for_load_state("networkidle")
    assert violations == []


def test_a_delete_form_asks_first_and_does_nothing_when_dismissed(app_server, browser, people):
    dataset = _dataset(people)
    page = browser.new_page()
    sign_in(page, app_server, "alice")
    page.goto(f"{app_server}/projects/{people.project.pk}/datasets/{dataset.pk}/")
    asked: list[str] = []

    def answer(dialog, accept):
        asked.append(dialog.message)
        dialog.accept() if accept else dialog.dismiss()

    page.once("dialog", lambda d: answer(d, False))
    page.click("form[data-confirm] button")
    page.wait_for_timeout(300)
    assert asked == ["Delete this dataset, its comparisons and labels?"]
    assert Dataset.objects.filter(pk=dataset.pk).exists()
    page.once("dialog", lambda d: answer(d, True))
    with page.expect_navigation():
        page.click("form[data-confirm] button")
    assert len(asked) == 2 and not Dataset.objects.filter(pk=dataset.pk).exists()
