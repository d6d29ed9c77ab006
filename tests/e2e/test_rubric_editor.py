"""In headless Chromium: edit a rubric, see an invalid regex flagged while typing, fix it, watch the live preview
change, save a new version and diff it against the previous one."""

import pytest

from tests.conftest import sign_in
from tests.webapp.rubric_helpers import add_dataset

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.browser]


def test_it_edits_a_rubric_with_inline_errors_live_preview_versions_and_diff(app_server, browser, people):
    from webapp.rubrics.models import RubricVersion
    from webapp.rubrics.services import rubric_create

    add_dataset(people.project, people.users["alice"])
    version = rubric_create(project=people.project, user=people.users["bob"], name="Helpful", definition={
        "name": "Helpful", "criteria": [
            {"name": "polite", "rule": {"kind": "contains", "texts": ["thank"]}},
            {"name": "greets", "rule": {"kind": "regex", "pattern": "^Hello"}},
        ]})
    page = browser.new_page()
    sign_in(page, app_server, "bob")

    base = f"{app_server}/projects/{people.project.pk}/rubrics/{version.rubric_id}"
    page.goto(base + "/edit/")
    thank_total = page.locator("#preview-table tr:has-text('Thank you for asking') td.total")
    assert thank_total.inner_text().startswith("0.500")  # polite yes, greets no

    pattern = page.locator("#c1-pattern")
    pattern.fill("")
    pattern.press_sequentially("^(Thank", delay=30)
    errors = page.locator("#criterion-errors-1")
    errors.locator("text=missing )").wait_for(timeout=10_000)
    assert "greets" in errors.inner_text() and "rule.pattern" in errors.inner_text()
    assert page.locator("#preview-table").count() == 0  # no preview of an invalid rubric

    pattern.press_sequentially("|The)", delay=30)
    page.wait_for_function("() => document.querySelector('#criterion-errors-1').innerText.trim() === ''",
                           timeout=10_000)
    page.locator("#check-state:has-text('valid')").wait_for(timeout=10_000)
    assert thank_total.inner_text().startswith("1.000")  # the preview follows the edit
    boxed_rank = page.locator("#preview-table tr:has-text('boxed') td.rank")
    assert "↑" in boxed_rank.inner_text()  # ranked higher than under the saved version

    page.click("#add-criterion")  # criteria are added and removed in place, the typed pattern kept
    page.locator("#c2-name").wait_for(timeout=10_000)
    page.click("#criterion-2 button[title=Remove]")
    page.locator("#c2-name").wait_for(state="detached", timeout=10_000)
    assert page.input_value("#c1-pattern") == "^(Thank|The)"

    page.fill("#id_note", "greet by thanking")
    page.click("#save-version")
    page.wait_for_url(base + "/")
    assert "Saved Helpful version 2" in page.inner_text(".messages")
    assert RubricVersion.objects.filter(rubric_id=version.rubric_id).count() == 2

    page.select_option("#id_a", "1")
    page.select_option("#id_b", "2")
    page.click("#diff-form button[type=submit]")
    diff = page.locator("#diff-items").inner_text()
    assert "greets" in diff and "rule.pattern" in diff and "^Hello" in diff and "^(Thank|The)" in diff
    assert "polite" in diff and "unchanged" in diff


def test_it_grades_the_criteria_without_a_rule_with_a_judge_in_the_live_preview(app_server, browser, people):
    from rlcore.judges.testing_server import ChatCompletionsServer, ScriptedReply
    from webapp.judging.models import JudgeConfig
    from webapp.rubrics.services import rubric_create

    def grateful(body):  # the default grade prompt holds the response: 1 when it thanks
        return ScriptedReply(content=f"Score: {1 if 'thank' in str(body['messages'][-1]['content']).lower() else 0}")

    add_dataset(people.project, people.users["alice"])
    version = rubric_create(project=people.project, user=people.users["bob"], name="Grateful", definition={
        "name": "Grateful", "criteria": [{"name": "grateful", "description": "Does it express gratitude?"}]})
    with ChatCompletionsServer(grateful) as server:
        JudgeConfig.objects.create(project=people.project, name="grader", endpoint=server.base_url, model="m",
                                   created_by=people.users["bob"])
        page = browser.new_page()
        sign_in(page, app_server, "bob")
        page.goto(f"{app_server}/projects/{people.project.pk}/rubrics/{version.rubric_id}/edit/")
        thank = page.locator("#preview-table tr:has-text('Thank you for asking') td.total")
        assert thank.inner_text().startswith("—")  # no rule, no judge: no score yet
        page.click("#judge-preview button")
        page.locator("#judged-by").wait_for(timeout=20_000)
        assert thank.inner_text().startswith("1.000")
        assert page.locator("#preview-table tr:has-text('www.example.com') td.total").inner_text().startswith("0.000")
        assert server.stats.requests == 4
