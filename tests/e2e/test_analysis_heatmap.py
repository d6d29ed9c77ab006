"""In headless Chromium, under the pages' CSP: pick reward sources, see the STARC heatmap whose cells
equal the paper's formula computed here, and click a cell to drill into the pairs two sources order
most differently (counted here independently)."""

import itertools

import pytest

from tests.conftest import sign_in
from tests.webapp.analysis_helpers import scored_project, starc_reference
from webapp.routing.models import ResponseRewardScore

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.browser]


def test_it_draws_the_distance_heatmap_and_drills_into_a_cell(app_server, browser, people):
    dataset, responses, models = scored_project(people.project, people.users["alice"], seed=3)
    scores = {f"RM {name} #{m.pk}": dict(ResponseRewardScore.objects.filter(reward_model=m)
                                         .values_list("response_id", "score")) for name, m in models.items()}
    expected = starc_reference(scores, {r.pk: r.prompt_id for r in responses})
    page = browser.new_page()
    violations: list[str] = []
    page.on("console", lambda msg: violations.append(msg.text) if "Content Security Policy" in msg.text else None)
    sign_in(page, app_server, "dave")  # a viewer
    page.goto(f"{app_server}/projects/{people.project.pk}/")
    page.click("nav.subnav a:has-text('Analysis')")
    for m in models.values():
        page.check(f"input[name=sources][value='rm:{m.pk}']")
    page.select_option("#id_dataset", str(dataset.pk))
    page.click("button:has-text('Compare')")
    page.wait_for_selector("svg#heatmap")
    cells = page.locator("svg#heatmap g.cell")
    assert cells.count() == 9
    for k in range(9):
        cell = cells.nth(k)
        d = expected[(cell.get_attribute("data-a"), cell.get_attribute("data-b"))]
        assert float(cell.get_attribute("data-distance")) == pytest.approx(d, abs=1e-6)
        assert cell.locator("text").text_content() == f"{d:.2f}"
    assert page.locator("#n-responses").inner_text() == "24" and page.locator("#n-prompts").inner_text() == "6"

    target = page.locator("svg#heatmap g.cell[data-i='0'][data-j='2']")
    first, second = target.get_attribute("data-a"), target.get_attribute("data-b")
    target.locator("rect").click()
    page.wait_for_selector("#drill-pairs")
    a, b = scores[first], scores[second]
    discordant = sum(1 for x, y in itertools.combinations(responses, 2) if x.prompt_id == y.prompt_id
                     and (a[x.pk] - a[y.pk]) * (b[x.pk] - b[y.pk]) < 0)
    assert page.locator("#drill-title").inner_text() == f"{first} vs {second}"
    assert page.locator("#n-discordant").inner_text() == str(discordant)
    assert page.locator("#n-considered").inner_text() == "36"
    assert page.locator("#drill-pairs tr[data-prompt]").count() == min(20, discordant)
    assert violations == []
