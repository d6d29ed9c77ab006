"""The Agreement page's step panel (issue 13): the figures of GET .../agreement/steps, each with its counts,
checked against hand counts and a hand-computed Wilson interval."""

import math
import re

import pytest

from tests.webapp.test_annotation_api import Api
from tests.webapp.test_steps_api import step_items  # noqa: F401 - the fixture
from webapp.annotation.models import Comparison


def _wilson(k: int, n: int, z: float = 1.959963984540054) -> tuple[float, float]:
    p = k / n
    centre, half = p + z * z / (2 * n), z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return (centre - half) / (1 + z * z / n), (centre + half) / (1 + z * z / n)


def _row(html: str, attr: str, key: str) -> list[str]:
    row = re.search(rf'<tr {attr}="{re.escape(key)}">(.*?)</tr>', html, re.S).group(1)
    return [re.sub(r"\s+", " ", re.sub(r"<[^>]+>", "", cell)).strip() for cell in re.findall(r"<td>(.*?)</td>", row, re.S)]


@pytest.mark.django_db
def test_it_shows_step_agreement_with_the_counts_it_rests_on(client, people, step_items):  # noqa: F811
    comparisons = list(Comparison.objects.filter(kind="steps").order_by("id"))
    alice = Api(client, people.users["alice"], people.project.pk)
    for comparison, grades in zip(comparisons, [[1, 1, 1], [1, -1, -1], [1, 1, 1]]):
        assert alice.post("/steps/lm-labels", {"comparison_id": comparison.pk, "grades": grades,
                                               "model_version": "judge-x"}).status_code == 201
    given = {"bob": [[1, 1, 1], [1, -1, 0], [1, 0, -1]], "carol": [[1, 1, 1], [1, 1, -1], [1, 0, 1]]}
    for name, per_item in given.items():
        api = Api(client, people.users[name], people.project.pk)
        for _ in comparisons:
            item = api.post("/annotation/steps/next").json()
            grades = per_item[[c.pk for c in comparisons].index(item["comparison_id"])]
            assert api.post("/annotation/steps/labels", {"assignment_id": item["assignment_id"],
                                                         "grades": grades}).status_code == 201
    client.force_login(people.users["dave"])  # a viewer sees the panel
    html = client.get(f"/projects/{people.project.pk}/agreement/").content.decode()
    text = re.sub(r"\s+", " ", html)
    assert "6 step labels by people" in text and "3 items with an LM pre-label" in text
    # hand count: 9 (item, step) units; bob and carol agree on 3 + 1 + 2 of them
    assert _row(html, "data-figure", "percent") == ["% agreement per step", f"{6 / 9:.3f}", "9 steps of 3 items"]
    # first wrong step: bob (none, 1, 2) vs carol (none, 2, none) -> 1 match in 3 pairs
    low, high = _wilson(1, 3)
    assert _row(html, "data-figure", "first-error") == [
        "first wrong step, exact match", f"{1 / 3:.3f} [{low:.3f}, {high:.3f}]", "3 pairs of people on 3 items"]
    # human-LM: 13 of 18 step grades agree (bob 3+2+1, carol 3+2+2)
    low, high = _wilson(13, 18)
    overall = _row(html, "data-lm", "all-overall")
    assert overall[:4] == ["all people", "all steps", f"{13 / 18:.3f}", f"[{low:.3f}, {high:.3f}]"]
    assert overall[5] == "18"
    assert _row(html, "data-lm", "all-step-0")[2:] == ["1.000", f"[{_wilson(6, 6)[0]:.3f}, 1.000]", "", "6"]
    assert _row(html, "data-lm", "all-model-judge-x")[-1] == "18"


@pytest.mark.django_db
def test_it_leaves_the_panel_out_of_a_project_without_step_labels(client, people):
    client.force_login(people.users["alice"])
    html = client.get(f"/projects/{people.project.pk}/agreement/").content.decode()
    assert "step-agreement" not in html
