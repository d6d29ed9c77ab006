"""In headless Chromium: an annotator labels with the keyboard only; the stored labels match the
keys pressed and the order each item was shown in; the page never reloads."""

import pytest

from tests.conftest import PASSWORD, wait_for
from webapp.annotation.models import Assignment, PreferenceLabel
from webapp.annotation.services import comparisons_build
from webapp.datasets.models import Dataset, Prompt, Response

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.browser]


def _setup(people):
    from webapp.rubrics.models import Rubric, RubricVersion

    alice = people.users["alice"]
    people.project.guidelines = "Prefer **correct** answers over long ones."
    people.project.save()
    dataset = Dataset.objects.create(project=people.project, name="demo", source_format="jsonl", status="ready",
                                     created_by=alice)
    for i in range(6):
        p = Prompt.objects.create(dataset=dataset, source_line=i + 1, text=f"Question {i}",
                                  messages=[{"role": "user", "content": f"Question {i}"}] if i == 0 else None)
        Response.objects.create(prompt=p, text=f"**first** answer {i}")
        Response.objects.create(prompt=p, text=f"second answer {i}\n\n```python\nprint({i})\n```")
    comparisons_build(project=people.project, dataset=dataset, overlap=1)
    ranked = Prompt.objects.create(dataset=dataset, source_line=7, text="Rank the three")
    for text in ("one", "two", "three"):
        Response.objects.create(prompt=ranked, text=text)
    comparisons_build(project=people.project, dataset=dataset, strategy="ranking", overlap=1)
    rubric = Rubric.objects.create(project=people.project, name="Helpfulness", use_for_annotation=True,
                                   created_by=alice)
    RubricVersion.objects.create(rubric=rubric, number=1, created_by=alice, definition={
        "name": "Helpfulness", "criteria": [{"name": "correct", "scale_min": 1, "scale_max": 5}]})


def _signed_in_as_carol(app_server, browser, people):
    """The project set up (see ``_setup``) and a page where carol signed in with the keyboard; and the
    workbench's address."""
    _setup(people)
    page = browser.new_page()
    page.goto(app_server + "/accounts/login/")
    page.fill("#id_username", "carol")
    page.fill("#id_password", PASSWORD)
    page.keyboard.press("Enter")
    page.wait_for_url(app_server + "/")
    return page, f"{app_server}/projects/{people.project.pk}/annotate/"


def _current(page) -> int:
    return int(page.get_attribute("#item", "data-assignment"))


def _press_and_wait(page, *keys):
    before = _current(page)
    for key in keys:
        page.keyboard.press(key)
    try:
        wait_for(lambda: (page.get_attribute("#item", "data-assignment") or "0") != str(before), 15, 0.05,
                 "the next item")
    except AssertionError:
        raise AssertionError(page.evaluate(
            "[document.getElementById('item').className, document.activeElement.tagName, "
            "document.getElementById('item').dataset.assignment, document.getElementById('item').innerText.slice(0, 300)]"
        )) from None
    return before


def test_it_annotates_with_the_keyboard_only(app_server, browser, people):
    page, workbench = _signed_in_as_carol(app_server, browser, people)
    page.goto(workbench)
    page.wait_for_selector("#label-form")
    page.evaluate("window.__noReload = 'still here'")
    assert page.locator(".turn-user").count() == 1  # the chat prompt renders as a chat turn
    assert page.locator(".wb-response code.language-python").count() == 1
    assert page.locator(".wb-response strong").first.inner_text() == "first"

    expected = {}
    # 1: A much better
    expected[_press_and_wait(page, "1")] = ("A", 2, "", None)
    # guidelines open and close on g, without labelling anything
    page.keyboard.press("g")
    page.wait_for_selector("dialog#guidelines[open]")
    assert "correct" in page.locator("dialog#guidelines strong").inner_text()
    page.keyboard.press("g")
    page.wait_for_selector("dialog#guidelines:not([open])", state="attached")
    # r: rationale, Esc back to keys, 5: B much better
    page.keyboard.press("r")
    page.keyboard.type("B runs")
    page.keyboard.press("Escape")
    expected[_press_and_wait(page, "5")] = ("B", 2, "B runs", None)
    # c: scores (Tab to B's score), Esc, 3: tie
    page.keyboard.press("c")
    page.keyboard.type("4")
    page.keyboard.press("Tab")
    page.keyboard.type("2")
    page.keyboard.press("Escape")
    expected[_press_and_wait(page, "3")] = ("tie", 0, "", {"A": 4.0, "B": 2.0})
    # s: skip
    skipped = _press_and_wait(page, "s")
    # 2 then u: label, undo (the same item comes back), then 4
    labelled = _press_and_wait(page, "2")
    back = _press_and_wait(page, "u")
    assert _current(page) == labelled and back != labelled
    page.wait_for_selector("#wb-undone")
    expected[_press_and_wait(page, "4")] = ("B", 1, "", None)
    expected[_press_and_wait(page, "t")] = ("tie", 0, "", None)
    # an N-way item: the numbers from best to worst, the last one implied
    assert page.get_attribute("#item", "data-kind") == "ranking"
    shown = [int(x) for x in page.eval_on_selector_all(".wb-response", "els => els.map(e => e.dataset.responseId)")]
    page.keyboard.press("3")
    page.wait_for_selector(".wb-response.ranked")
    ranking_item = _press_and_wait(page, "1")
    page.wait_for_selector("#wb-empty")
    assert page.evaluate("window.__noReload") == "still here"
    ranking_label = PreferenceLabel.objects.get(assignment_id=ranking_item)
    assert (ranking_label.choice, ranking_label.ranking) == ("ranking", [shown[2], shown[0], shown[1]])

    labels = {lab.assignment_id: lab for lab in PreferenceLabel.objects.filter(annotator=people.users["carol"])
              .exclude(choice="ranking")}
    assert set(labels) == set(expected)
    for assignment_id, (letter, strength, rationale, scores) in expected.items():
        label = labels[assignment_id]
        comparison = label.comparison
        shown = Assignment.objects.get(pk=assignment_id).display_order
        assert label.display_order == shown
        if letter == "tie":
            assert label.choice == "tie"
        else:
            winner = shown[0] if letter == "A" else shown[1]
            assert label.choice == ("a" if winner == comparison.response_ids[0] else "b")
        assert (label.strength, label.rationale) == (strength, rationale)
        if scores:
            assert label.criterion_scores == {str(shown[0]): {"correct": scores["A"]},
                                              str(shown[1]): {"correct": scores["B"]}}
            assert label.rubric_version is not None
    assert Assignment.objects.get(pk=skipped).status == "skipped"
    assert not PreferenceLabel.objects.filter(assignment_id=skipped).exists()


def test_it_acts_on_the_key_map_the_page_carries(app_server, browser, people):
    """The keys are the view's map (WORKBENCH_KEYS): served with B-much-better on z instead of 5, z labels."""
    page, workbench = _signed_in_as_carol(app_server, browser, people)

    def moved_key(route):
        response = route.fetch()
        html, served = response.text(), '"5": ["choose", ["B", 2], "B much better"]'
        assert served in html
        route.fulfill(response=response, body=html.replace(served, served.replace('"5"', '"z"')))

    page.route(workbench, moved_key)
    page.goto(workbench)
    page.wait_for_selector("#label-form")
    shown = _current(page)
    page.keyboard.press("5")
    page.wait_for_timeout(500)
    assert _current(page) == shown and not PreferenceLabel.objects.exists()
    assert _press_and_wait(page, "z") == shown
    label = PreferenceLabel.objects.get(assignment_id=shown)
    winner = Assignment.objects.get(pk=shown).display_order[1]
    assert label.strength == 2 and label.choice == ("a" if winner == label.comparison.response_ids[0] else "b")
