"""In headless Chromium (issue 13): a dataset is imported over HTTP and split into steps, an LM pre-labels one
item, two annotators grade every step with the keyboard only (one confirms the LM's suggestion, one corrects
it), the stored step labels match the keys pressed, and the stepwise export imports back with every field."""

import json

import httpx
import pytest

from tests.conftest import sign_in, token_for, wait_for
from webapp.annotation.models import Assignment, Comparison, StepLabel

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.browser]

ROWS = [{"prompt": f"What is {i} + {i}?", "responses": [f"Step 1: take {i}\nStep 2: add {i}\nStep 3: get {2 * i}"]}
        for i in range(3)]


def _api(base, user):
    return httpx.Client(base_url=f"{base}/api/v1/projects/", timeout=30,
                        headers={"Authorization": f"Bearer {token_for(user)}"})


def _press_and_wait(page, *keys) -> int:
    """Press the keys; return the assignment that was on screen once the next item has replaced it."""
    before = page.get_attribute("#item", "data-assignment")
    for key in keys:
        page.keyboard.press(key)
    wait_for(lambda: page.get_attribute("#item", "data-assignment") != before, 15, 0.05, "the next step item")
    return int(before)


def _open_step_mode(browser, base, username, project_id):
    page = browser.new_page()  # a context of its own: its own session cookie
    sign_in(page, base, username)
    page.goto(f"{base}/projects/{project_id}/annotate/steps/")
    page.wait_for_selector(".wb-step")
    page.evaluate("window.__noReload = 'still here'")
    return page


def test_two_annotators_grade_steps_with_the_keyboard_and_the_labels_survive_export_and_import(
        app_server, browser, people):
    pk = people.project.pk
    alice = _api(app_server, people.users["alice"])
    content = "".join(json.dumps(r) + "\n" for r in ROWS).encode()
    r = alice.post(f"{pk}/datasets", files={"file": ("steps.jsonl", content)}, data={"step_rule": "step_header"})
    assert r.status_code == 201, r.text
    assert alice.post(f"{pk}/steps/build", json={"dataset_id": r.json()["id"], "overlap": 2}).json() == {"created": 3}
    first, second, third = Comparison.objects.filter(kind="steps").order_by("id")
    lm = alice.post(f"{pk}/steps/lm-labels", json={"comparison_id": first.pk, "grades": [1, -1, -1],
                                                    "model_version": "judge-x"})
    assert lm.status_code == 201, lm.text

    # carol: the LM's suggestion is shown per step and filled in; Enter alone confirms it
    carol = _open_step_mode(browser, app_server, "carol", pk)
    assert carol.locator(".wb-step-suggested").all_inner_texts() == ["LM: good", "LM: bad", "LM: bad"]
    assert carol.locator(".wb-step-grade").all_inner_texts() == ["good", "bad", "bad"]
    confirmed = _press_and_wait(carol, "Enter")
    # the next item without a reload: g g b, back up with ↑ to regrade step 2 neutral, f on step 3, a note, Enter
    carol.wait_for_selector(".wb-step[aria-current='step'][data-index='0']")
    carol.keyboard.press("g")
    carol.keyboard.press("g")
    carol.keyboard.press("b")
    carol.keyboard.press("ArrowUp")
    carol.keyboard.press("n")  # step 2 neutral; the cursor moves on to step 3
    carol.keyboard.press("f")
    carol.wait_for_selector(".wb-step[data-index='2'] .wb-step-first:not([hidden])")
    carol.keyboard.press("r")
    carol.keyboard.type("step 3 doubles wrongly")
    carol.keyboard.press("Escape")
    graded = _press_and_wait(carol, "Enter")
    skipped = _press_and_wait(carol, "s")
    carol.wait_for_selector("#wb-empty")
    assert carol.evaluate("window.__noReload") == "still here"

    # bob: corrects the suggestion (j to step 2, g); a submit with a step left ungraded is refused on the page
    bob = _open_step_mode(browser, app_server, "bob", pk)
    bob.keyboard.press("j")
    corrected = _press_and_wait(bob, "g", "Enter")
    held = bob.get_attribute("#item", "data-assignment")
    bob.keyboard.press("b")
    bob.keyboard.press("Enter")
    bob.wait_for_selector("#wb-step-missing:not([hidden])")
    assert "step 2 has no grade" in bob.inner_text("#wb-step-missing")
    assert bob.get_attribute("#item", "data-assignment") == held  # still the same item, nothing sent
    bad_first = _press_and_wait(bob, "g", "g", "Enter")
    bobs_third = _press_and_wait(bob, "n", "k", "j", "n", "n", "Enter")
    bob.wait_for_selector("#wb-empty")
    assert bob.evaluate("window.__noReload") == "still here"

    def label(assignment_id):
        return StepLabel.objects.get(assignment_id=assignment_id)

    got = {a: (label(a).comparison_id, label(a).source, label(a).grades, label(a).first_error, label(a).note,
               label(a).changed_steps) for a in (confirmed, graded, corrected, bad_first, bobs_third)}
    assert got == {
        confirmed: (first.pk, "reviewed", [1, -1, -1], 1, "", 0),
        graded: (second.pk, "human", [1, 0, -1], 2, "step 3 doubles wrongly", None),
        corrected: (first.pk, "reviewed", [1, 1, -1], 2, "", 1),
        bad_first: (second.pk, "human", [-1, 1, 1], 0, "", None),
        bobs_third: (third.pk, "human", [0, 0, 0], None, "", None),
    }
    assert label(confirmed).suggestion_id == lm.json()["id"] == label(corrected).suggestion_id
    assert Assignment.objects.get(pk=skipped).status == "skipped" and not StepLabel.objects.filter(
        assignment_id=skipped).exists()

    # the stepwise export imports back with every stored field
    exported = alice.get(f"{pk}/steps/export")
    assert exported.status_code == 200 and exported.headers["X-Rows-Out"] == "6"
    back = alice.post(f"{pk}/steps/import", files={"file": ("steps.jsonl", exported.content)})
    assert back.status_code == 201, back.text
    keys = ("source", "scale", "grades", "first_error", "note", "annotator_id")
    originals = StepLabel.objects.filter(comparison__prompt__dataset_id=r.json()["id"]).order_by("id")
    imported = StepLabel.objects.filter(comparison__prompt__dataset_id=back.json()["id"]).order_by("id")
    assert [tuple(getattr(x, k) for k in keys) for x in imported] == \
           [tuple(getattr(x, k) for k in keys) for x in originals]
    assert len(originals) == 6
