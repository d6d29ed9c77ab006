"""Routing step items (issue 13): under a human budget, people get the step items where the measured human-LM
step agreement of items like them (same step-count bucket) is lowest; too small an overlap falls back to a
seeded random draw and says why. Expected figures are hand counts of the planted labels below."""

import math
import re

import pytest

from tests.webapp.test_annotation_api import Api
from tests.webapp.test_steps_api import _import
from rlcore.judges.testing_server import ChatCompletionsServer, ScriptedReply, grades_steps_by_keyword
from tests.conftest import wait_for
from webapp.annotation.models import Comparison, StepLabel
from webapp.judging.models import LMLabellingRun
from webapp.judging.configs import judge_config_create
from webapp.routing.models import RoutingPlan

SHORT, LONG = 2, 6  # steps: buckets "1-2" and "5-8"


def _rows(n_short: int, n_long: int, mumble: int | None = None) -> list[dict]:
    def text(k: int, i: int) -> str:  # the judge below cannot grade a step that says MUMBLE
        return "\n".join(f"Step {s + 1}: " + ("MUMBLE" if (k, i, s) == (SHORT, mumble, 1) else f"move {i} by {s}")
                         for s in range(k))

    return ([{"prompt": f"Short {i}?", "responses": [text(SHORT, i)]} for i in range(n_short)]
            + [{"prompt": f"Long {i}?", "responses": [text(LONG, i)]} for i in range(n_long)])


def _wilson(k: int, n: int, z: float = 1.959963984540054) -> tuple[float, float]:
    p = k / n
    centre, half = p + z * z / (2 * n), z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return (centre - half) / (1 + z * z / n), (centre + half) / (1 + z * z / n)


def _items(client, people, n_short: int, n_long: int, n_labelled_each: int, mumble: int | None = None):
    """Step items; the first n_labelled_each short and long ones graded by the LM and by carol. The judge
    agrees with her on every short item and on only the first step of every long one."""
    r = _import(client, people, _rows(n_short, n_long, mumble), step_rule="step_header")
    assert r.status_code == 201, r.content
    api = Api(client, people.users["alice"], people.project.pk)
    assert api.post("/steps/build", {"dataset_id": r.json()["id"]}).status_code == 201
    items = list(Comparison.objects.filter(kind="steps").select_related("step_split").order_by("id"))
    short = [c for c in items if len(c.step_split.steps) == SHORT]
    long = [c for c in items if len(c.step_split.steps) == LONG]
    assert len(short) == n_short and len(long) == n_long
    for c in short[:n_labelled_each] + long[:n_labelled_each]:
        n = len(c.step_split.steps)
        assert api.post("/steps/lm-labels", {"comparison_id": c.pk, "grades": [1] * n,
                                             "model_version": "judge-x"}).status_code == 201
        human = [1] * n if n == SHORT else [1] + [-1] * (n - 1)
        StepLabel.objects.create(comparison=c, step_split_id=c.step_split_id, source="human",
                                 annotator=people.users["carol"], scale="ternary", grades=human,
                                 first_error=None if n == SHORT else 1)
    return api, short, long


@pytest.mark.django_db
def test_the_budget_goes_to_the_long_items_the_judge_grades_badly(client, people):
    api, short, long = _items(client, people, n_short=10, n_long=10, n_labelled_each=5)
    r = api.post("/routing/plans", {"budget": "5", "strategy": "steps_agreement"})
    assert r.status_code == 201, r.content
    plan = r.json()
    assert plan["strategy"] == "steps_agreement" and plan["fallback_reason"] == ""
    assert (plan["n_total"], plan["n_human"], plan["n_lm"]) == (10, 5, 5)  # the 10 items nobody labelled
    ev = plan["evidence"]
    # hand counts: 5 short items x 2 steps all agree; 5 long items agree on 1 of 6 steps each
    assert (ev["n_items"], ev["n_steps"], ev["n_agree"]) == (10, 40, 15)
    buckets = {b["bucket"]: b for b in ev["by_bucket"]}
    assert (buckets["1-2"]["n_items"], buckets["1-2"]["n_steps"], buckets["1-2"]["agreement"]) == (5, 10, 1.0)
    assert (buckets["5-8"]["n_items"], buckets["5-8"]["n_steps"]) == (5, 30)
    assert buckets["5-8"]["agreement"] == pytest.approx(5 / 30)
    assert buckets["5-8"]["interval"] == pytest.approx(_wilson(5, 30))
    human = {d["comparison_id"] for d in plan["decisions"] if d["route"] == "human"}
    assert human == {c.pk for c in long[5:]}
    lm = {d["comparison_id"] for d in plan["decisions"] if d["route"] == "lm"}
    assert lm == {c.pk for c in short[5:]}
    reason = next(d for d in plan["decisions"] if d["route"] == "human")["top_features"][0]
    assert reason["feature"] == "steps=5-8" and reason["n_items"] == 5
    assert reason["expected_agreement"] == pytest.approx(5 / 30)

    client.force_login(people.users["dave"])  # a viewer sees the plan with its reasons
    html = client.get(f"/projects/{people.project.pk}/routing/plans/{plan['id']}/").content.decode()
    row = re.search(r'<tr data-bucket="5-8">(.*?)</tr>', html, re.S).group(1)
    cells = [re.sub(r"<[^>]+>", "", c).strip() for c in re.findall(r"<td>(.*?)</td>", row, re.S)]
    low, high = _wilson(5, 30)
    assert cells == ["5-8", "5", "30", f"{5 / 30:.3f}", f"[{low:.3f}, {high:.3f}]"]
    assert "steps=5-8 (expected agreement 0.167, 5 items)" in html


@pytest.mark.django_db
def test_too_small_an_overlap_falls_back_to_random_with_the_reason(client, people):
    api, short, long = _items(client, people, n_short=6, n_long=6, n_labelled_each=2)
    r = api.post("/routing/plans", {"budget": "50%", "strategy": "steps_agreement", "seed": 3})
    assert r.status_code == 201, r.content
    plan = r.json()
    assert plan["strategy"] == "steps_random" and plan["requested_strategy"] == "steps_agreement"
    assert "Only 4 step item(s)" in plan["fallback_reason"] and "at least 10" in plan["fallback_reason"]
    assert (plan["n_total"], plan["n_human"]) == (8, 4)
    assert all(d["top_features"][0]["feature"] == "random draw" for d in plan["decisions"])
    again = api.post("/routing/plans", {"budget": "50%", "strategy": "steps_agreement", "seed": 3}).json()
    assert ({d["comparison_id"] for d in again["decisions"] if d["route"] == "human"}
            == {d["comparison_id"] for d in plan["decisions"] if d["route"] == "human"})  # seeded
    client.force_login(people.users["dave"])
    html = client.get(f"/projects/{people.project.pk}/routing/plans/{plan['id']}/").content.decode()
    assert 'id="fallback-reason"' in html and "Only 4 step item(s)" in html


@pytest.mark.django_db
def test_a_budget_over_the_step_pool_is_a_422_naming_the_field(client, people):
    api, _, _ = _items(client, people, n_short=2, n_long=2, n_labelled_each=0)
    r = api.post("/routing/plans", {"budget": "50", "strategy": "steps_agreement"})
    assert r.status_code == 422
    assert r.json()["detail"][0]["field"] == "budget" and "4 step items" in r.json()["detail"][0]["message"]
    assert not RoutingPlan.objects.exists()


@pytest.mark.django_db(transaction=True)
@pytest.mark.worker
def test_approving_sends_the_lm_side_to_the_step_judge_and_returns_what_it_cannot_grade(client, people,
                                                                                     celery_workers):
    api, short, long = _items(client, people, n_short=7, n_long=7, n_labelled_each=5, mumble=6)
    plan = api.post("/routing/plans", {"budget": "2", "strategy": "steps_agreement"}).json()
    assert {d["comparison_id"] for d in plan["decisions"] if d["route"] == "human"} == {c.pk for c in long[5:]}
    keyword = grades_steps_by_keyword("oops")

    def judge(body):
        return ScriptedReply(content="Hmm, hard to say.") if "MUMBLE" in body["messages"][-1]["content"] \
            else keyword(body)

    with ChatCompletionsServer(judge) as server:
        config = judge_config_create(project=people.project, user=people.users["bob"], name="stepper",
                                     model="judge-s", endpoint=server.base_url, max_retries=0)
        r = api.post(f"/routing/plans/{plan['id']}/approve", {"judge_config_id": config.pk})
        assert r.status_code == 200, r.content
        assert r.json()["status"] == "approved" and r.json()["job_id"]
        run = LMLabellingRun.objects.get(job_id=r.json()["job_id"])
        assert run.mode == "steps" and sorted(run.comparison_ids) == [short[5].pk, short[6].pk]
        assert not Comparison.objects.filter(pk__in=run.comparison_ids, is_active=True).exists()
        assert Comparison.objects.filter(pk__in=[c.pk for c in long[5:]], is_active=True).count() == 2
        wait_for(lambda: LMLabellingRun.objects.filter(pk=run.pk, finished=True).exists(), 90, 0.5,
                 "the step pre-label run to finish")
    done = {d["comparison_id"]: d for d in api.get(f"/routing/plans/{plan['id']}").json()["decisions"]}
    assert done[short[5].pk]["status"] == "lm_labelled"
    assert done[short[6].pk]["status"] == "returned" and "no score found" in done[short[6].pk]["reason"]
    assert Comparison.objects.get(pk=short[6].pk).is_active  # back to people
    assert not Comparison.objects.get(pk=short[5].pk).is_active
