"""Routing plans through the REST API and the pages: budgets and their errors, approval through the
annotation queue, the performance model for topk / optimal_pos, permissions."""

import json
from pathlib import Path

import pytest

from tests.conftest import PASSWORD, token_for
from tests.webapp.routing_helpers import keyword_rows, pairs_dataset
from webapp.annotation.models import Comparison, LabelSource, PreferenceLabel
from webapp.annotation.services import assignment_next, label_submit, lm_label_create
from webapp.jobs.models import Job
from webapp.judging.models import LMLabellingRun
from webapp.routing.models import RoutingDecision, RoutingPlan

pytestmark = pytest.mark.django_db
SECRET = "sk-routing-test-0b1c2d3e4f"


class Api:
    def __init__(self, client, user, project_id):
        self.client, self.base = client, f"/api/v1/projects/{project_id}"
        self.headers = {"Authorization": f"Bearer {token_for(user)}"}

    def post(self, path, data=None):
        return self.client.post(self.base + path, data or {}, content_type="application/json", headers=self.headers)

    def get(self, path):
        return self.client.get(self.base + path, headers=self.headers)


@pytest.fixture
def pool(people):
    pairs_dataset(project=people.project, user=people.users["alice"], rows=keyword_rows(12, biased_every=3))
    return list(Comparison.objects.filter(project=people.project).order_by("id"))


def _errors(response) -> dict:
    return {d["field"]: d["message"] for d in response.json()["detail"]}


def test_it_names_the_budget_problem_and_stores_nothing(client, people, pool):
    api = Api(client, people.users["bob"], people.project.pk)
    above = api.post("/routing/plans", {"budget": "13", "strategy": "random"})
    assert above.status_code == 422
    assert "13 is more than the 12 comparisons" in _errors(above)["budget"]
    below = api.post("/routing/plans", {"budget": "-1", "strategy": "random"})
    assert "below zero" in _errors(below)["budget"]
    share = api.post("/routing/plans", {"budget": "150%", "strategy": "random"})
    assert "above 1" in _errors(share)["budget"]
    garbage = api.post("/routing/plans", {"budget": "lots", "strategy": "sideways"})
    assert set(_errors(garbage)) == {"budget", "strategy"}
    assert RoutingPlan.objects.count() == 0

    client.login(username="bob", password=PASSWORD)
    page = client.post(f"/projects/{people.project.pk}/routing/", {"budget": "40", "strategy": "uncertainty"})
    assert page.status_code == 422
    html = page.content.decode()
    assert 'id="error-budget"' in html and "40 is more than the 12 comparisons" in html
    assert RoutingPlan.objects.count() == 0



def test_it_sends_a_pool_above_the_inline_limit_to_a_job_instead_of_planning_in_the_request(
        client, people, pool, settings):
    """A pool larger than ROUTING_INLINE_POOL (at 500k pooled comparisons the request grew the worker past
    2.2 GB until it was killed) gets a pending plan and a job (202); at the limit it is planned inline (201).
    tests/webapp/test_routing_background.py runs the job on a real worker."""
    settings.ROUTING_INLINE_POOL = 11
    api = Api(client, people.users["bob"], people.project.pk)
    pending = api.post("/routing/plans", {"budget": "25%", "strategy": "random"})
    assert pending.status_code == 202, pending.content
    body = pending.json()
    assert (body["status"], body["n_total"], body["decisions"]) == ("pending", 12, [])
    job = Job.objects.get(pk=body["planning_job_id"])
    assert job.kind == "routing_plan" and job.argv[:4] == ["routing", "plan", "comparisons.jsonl", "--comparisons"]
    assert len((Path(job.output_dir) / "comparisons.jsonl").read_text().splitlines()) == 12
    settings.ROUTING_INLINE_POOL = 12
    assert api.post("/routing/plans", {"budget": "25%", "strategy": "random"}).status_code == 201


def test_it_routes_a_share_and_shows_how_many_go_where_and_why(client, people, pool):
    # Judge signals from earlier LM labels: position bias on every third comparison.
    for i, c in enumerate(pool):
        lm_label_create(comparison=c, choice="tie" if i % 3 == 2 else "a", model_version="m",
                        provenance={"position_bias": i % 3 == 2, "confidence": 0.0 if i % 3 == 2 else 0.9})
    api = Api(client, people.users["bob"], people.project.pk)
    plan = api.post("/routing/plans", {"budget": "25%", "strategy": "uncertainty"})
    assert plan.status_code == 201, plan.content
    body = plan.json()
    assert (body["n_total"], body["n_human"], body["n_lm"], body["status"]) == (12, 3, 9, "draft")
    human = {d["comparison_id"] for d in body["decisions"] if d["route"] == "human"}
    biased = {c.pk for i, c in enumerate(pool) if i % 3 == 2}
    assert human <= biased  # the judge's doubtful ones go to people
    assert body["top_features"][0]["feature"] in ("judge_position_disagreement", "judge_confidence")
    assert all(d["status"] == "proposed" for d in body["decisions"])
    client.login(username="dave", password=PASSWORD)  # a viewer sees the plan and its reasons
    page = client.get(f"/projects/{people.project.pk}/routing/plans/{body['id']}/").content.decode()
    assert 'id="n-human">3<' in page and "judge_position_disagreement" in page and 'id="approve"' not in page


def test_it_applies_an_approved_plan_through_the_queue_and_a_judge_job(client, people, pool, settings):
    api = Api(client, people.users["bob"], people.project.pk)
    judge = api.post("/judges", {"name": "j", "endpoint": "http://127.0.0.1:9/v1", "model": "m",
                                 "api_key": SECRET}).json()
    plan = api.post("/routing/plans", {"budget": "4", "strategy": "random", "seed": 3}).json()
    refused = api.post(f"/routing/plans/{plan['id']}/approve", {})
    assert refused.status_code == 422 and "Choose the LM judge for the 8 comparisons" in _errors(refused)["judge_config"]
    approved = api.post(f"/routing/plans/{plan['id']}/approve", {"judge_config_id": judge["id"]})
    assert approved.status_code == 200, approved.content
    body = approved.json()
    human = {d["comparison_id"] for d in body["decisions"] if d["route"] == "human"}
    lm = {d["comparison_id"] for d in body["decisions"] if d["route"] == "lm"}
    assert body["status"] == "approved" and len(human) == 4 and len(lm) == 8
    assert {d["status"] for d in body["decisions"]} == {"human_queue", "lm_pending"}
    # The annotation queue hands out the human side only.
    seen = set()
    for annotator in ("carol", "bob", "alice", "dave"):
        while (a := assignment_next(project=people.project, user=people.users[annotator])) is not None:
            seen.add(a.comparison_id)
            label_submit(project=people.project, user=people.users[annotator], assignment_id=a.pk, choice="a",
                         strength=1)
    assert seen == human
    # The LM side goes to one judge job: pairs snapshot in canonical order, key off the command line.
    job = Job.objects.get(pk=body["job_id"])
    assert job.kind == "judge_labels" and job.queue == "default"
    assert SECRET not in json.dumps(job.argv) and SECRET not in json.dumps(job.spec)
    folder = Path(job.output_dir)
    pairs = [json.loads(line) for line in (folder / "pairs.jsonl").read_text().splitlines()]
    assert {int(p["id"]) for p in pairs} == lm
    first = Comparison.objects.get(pk=pairs[0]["id"])
    assert pairs[0]["response_a"] == first.responses()[0].text
    assert (folder / "api-key").read_text() == SECRET and oct((folder / "api-key").stat().st_mode)[-3:] == "600"
    assert LMLabellingRun.objects.get(job=job).comparison_ids == sorted(lm)
    again = api.post(f"/routing/plans/{plan['id']}/approve", {"judge_config_id": judge["id"]})
    assert again.status_code == 422 and "re-run it" in _errors(again)["plan"]
    # Cancelled before a worker took it: its pairs go back to people and the key file goes away.
    from webapp.jobs.services import job_request_cancel

    job_request_cancel(job=job)
    assert api.get(f"/routing/plans/{plan['id']}").json()["decision_counts"] == {"human_queue": 4, "returned": 8}
    assert not (folder / "api-key").exists()
    assert set(Comparison.objects.filter(is_active=True).values_list("pk", flat=True)) == human | lm


def test_it_reruns_on_the_comparisons_people_have_not_labelled(client, people, pool):
    api = Api(client, people.users["bob"], people.project.pk)
    plan = api.post("/routing/plans", {"budget": "50%", "strategy": "random"}).json()
    for c in pool[:4]:
        PreferenceLabel.objects.create(comparison=c, source=LabelSource.HUMAN, annotator=people.users["carol"],
                                       choice="a", strength=1)
        Comparison.objects.filter(pk=c.pk).update(human_label_count=1)
    rerun = api.post(f"/routing/plans/{plan['id']}/rerun")
    assert rerun.status_code == 201
    body = rerun.json()
    assert body["parent_id"] == plan["id"] and (body["n_total"], body["n_human"]) == (8, 4)
    assert not {d["comparison_id"] for d in body["decisions"]} & {c.pk for c in pool[:4]}


def test_it_falls_back_from_topk_on_a_small_pilot_and_shows_why_with_the_gain_interval(client, people):
    pairs_dataset(project=people.project, user=people.users["alice"], rows=keyword_rows(30, biased_every=3))
    comparisons = list(Comparison.objects.filter(project=people.project).order_by("id"))
    api = Api(client, people.users["bob"], people.project.pk)
    early = api.post("/routing/plans", {"budget": "5", "strategy": "topk"})
    assert early.status_code == 422 and "this project has 0" in _errors(early)["strategy"]
    for i, c in enumerate(comparisons[:14]):
        a_text = c.responses()[0].text
        truth = "a" if "thanks" in a_text else "b"
        PreferenceLabel.objects.create(comparison=c, source=LabelSource.HUMAN, annotator=people.users["carol"],
                                       choice=truth, strength=1)
        lm_label_create(comparison=c, choice=truth if i % 3 != 2 else "a", model_version="m",
                        provenance={"position_bias": i % 3 == 2, "confidence": 0.5 if i % 3 == 2 else 0.9})
    # The fit pool has both labels; the routed pool is the comparisons no person labelled.
    Comparison.objects.filter(pk__in=[c.pk for c in comparisons[:14]]).update(human_label_count=1)
    plan = api.post("/routing/plans", {"budget": "25%", "strategy": "topk"})
    assert plan.status_code == 201, plan.content
    body = plan.json()
    assert (body["n_total"], body["n_human"]) == (16, 4)
    assert body["predicted_gain"] is not None and body["model_info"]["fit_pool"] == 14
    # 14 doubly-labelled comparisons cannot show a gain over random: the plan is random, and says why
    assert (body["requested_strategy"], body["strategy"]) == ("topk", "random")
    assert "rests on 14 pilot comparisons" in body["fallback_reason"] and "at least 100" in body["fallback_reason"]
    ev = body["evidence"]
    assert ev["n_pilot"] == 14 and ev["passed"] is False and len(ev["gain_by_half"]) == 0
    assert not any(d["top_features"] for d in body["decisions"])
    optimal = api.post("/routing/plans", {"budget": "", "strategy": "optimal_pos"})
    assert optimal.status_code == 201 and optimal.json()["n_human"] <= 16
    assert optimal.json()["strategy"] == "random" and optimal.json()["fallback_reason"]
    assert RoutingDecision.objects.filter(plan_id=body["id"]).count() == 16
    client.force_login(people.users["bob"])
    html = client.get(f"/projects/{people.project.pk}/routing/plans/{body['id']}/").content.decode()
    assert 'id="fallback-reason"' in html and "rests on 14 pilot comparisons" in html
    assert "asked for topk; fell back" in html
    # a re-run asks for topk again (and falls back again while the pilot is this small)
    rerun = api.post(f"/routing/plans/{body['id']}/rerun").json()
    assert (rerun["requested_strategy"], rerun["strategy"]) == ("topk", "random")


def test_it_routes_by_topk_and_shows_the_held_out_gain_interval_when_the_pilot_shows_it(client, people):
    pairs_dataset(project=people.project, user=people.users["alice"], rows=keyword_rows(160, biased_every=3))
    comparisons = list(Comparison.objects.filter(project=people.project).order_by("id"))
    for i, c in enumerate(comparisons[:120]):
        truth = "a" if "thanks" in c.responses()[0].text else "b"
        PreferenceLabel.objects.create(comparison=c, source=LabelSource.HUMAN, annotator=people.users["carol"],
                                       choice=truth, strength=1)
        # the judge is wrong exactly where it shows doubt (position bias): human labels pay off there
        biased = i % 3 == 2
        lm_label_create(comparison=c, choice=("b" if truth == "a" else "a") if biased else truth, model_version="m",
                        provenance={"position_bias": biased, "confidence": 0.5 if biased else 0.9})
    Comparison.objects.filter(pk__in=[c.pk for c in comparisons[:120]]).update(human_label_count=1)
    api = Api(client, people.users["bob"], people.project.pk)
    body = api.post("/routing/plans", {"budget": "25%", "strategy": "topk"}).json()
    ev = body["evidence"]
    assert ev["n_pilot"] == 120 and len(ev["gain_by_half"]) == 6, body
    assert body["strategy"] == "topk" and ev["passed"] and body["fallback_reason"] == ""
    assert 0 < ev["interval_low"] <= ev["gain_over_random"] <= ev["interval_high"] and ev["cv_r2"] > 0
    human = [d["comparison_id"] for d in body["decisions"] if d["route"] == "human"]
    assert all("cats" in Comparison.objects.get(pk=c).prompt.text for c in human)  # the topic the judge gets wrong
    client.force_login(people.users["bob"])
    html = client.get(f"/projects/{people.project.pk}/routing/plans/{body['id']}/").content.decode()
    assert 'id="gain-over-random"' in html and "Rests on 120 pilot comparisons" in html


@pytest.mark.parametrize("role,status", [("annotator", 403), ("viewer", 403), ("outsider", 404)])
def test_it_lets_only_designers_plan_and_approve(client, people, pool, role, status):
    plan = Api(client, people.users["alice"], people.project.pk).post(
        "/routing/plans", {"budget": "2", "strategy": "random"}).json()
    api = Api(client, people.by_role[role], people.project.pk)
    assert api.post("/routing/plans", {"budget": "2", "strategy": "random"}).status_code == status
    assert api.post(f"/routing/plans/{plan['id']}/approve", {}).status_code == status
    assert api.post(f"/routing/plans/{plan['id']}/rerun").status_code == status
    assert api.get(f"/routing/plans/{plan['id']}").status_code == (200 if role == "viewer" else status)
    client.login(username=people.by_role[role].username, password=PASSWORD)
    assert client.post(f"/projects/{people.project.pk}/routing/plans/{plan['id']}/approve/").status_code == status
    assert RoutingPlan.objects.get(pk=plan["id"]).status == "draft"


def test_it_shows_human_lm_agreement_per_routing_feature_on_the_agreement_page(client, people, pool):
    carol, bob = people.users["carol"], people.users["bob"]
    for i, c in enumerate(pool):
        human = "a" if "thanks" in c.responses()[0].text else "b"
        for user in (carol, bob):
            PreferenceLabel.objects.create(comparison=c, source=LabelSource.HUMAN, annotator=user, choice=human,
                                           strength=1)
        # The LM agrees on the "thanks" pairs and always says "a" on the others (topic "pets").
        lm_label_create(comparison=c, choice=human if i % 3 != 2 else "a", model_version="m", provenance={})
    api = Api(client, people.users["dave"], people.project.pk)
    body = api.get("/routing/agreement").json()
    assert body["n_both"] == 12
    assert body["by_pair_kind"]["human-human"]["percent_agreement"] == 1.0
    # pets pairs (every third) have no "thanks": people say b, the LM says a; 8 of 12 agree.
    assert body["by_pair_kind"]["human-lm"]["percent_agreement"] == pytest.approx(8 / 12)
    by_feature = body["by_feature"]
    assert by_feature["category=chat"]["percent_agreement"] == 1.0
    assert by_feature["category=pets"]["percent_agreement"] == 0.0
    client.login(username="dave", password=PASSWORD)
    page = client.get(f"/projects/{people.project.pk}/agreement/").content.decode()
    assert f"/projects/{people.project.pk}/routing/agreement-by-feature/" in page
    fragment = client.get(f"/projects/{people.project.pk}/routing/agreement-by-feature/").content.decode()
    assert 'data-feature="category=pets"' in fragment and 'data-kind="human-lm"' in fragment


def test_it_renders_the_routing_and_judge_pages_for_a_designer(client, people, pool):
    client.login(username="bob", password=PASSWORD)
    base = f"/projects/{people.project.pk}"
    home = client.get(f"{base}/routing/").content.decode()
    assert "12 pairwise comparisons have no human label yet" in home and 'id="plan-form"' in home
    created = client.post(f"{base}/routing/", {"budget": "25%", "strategy": "random", "seed": 1})
    assert created.status_code == 302
    plan = RoutingPlan.objects.get()
    page = client.get(created.headers["Location"]).content.decode()
    assert 'id="approve"' in page and 'id="n-human">3<' in page and 'id="n-lm">9<' in page
    refused = client.post(f"{base}/routing/plans/{plan.pk}/approve/", follow=True).content.decode()
    assert "Choose the LM judge for the 9 comparisons" in refused
    assert client.get(f"{base}/judging/").status_code == 200
    assert "{response_a}" in client.get(f"{base}/judging/templates/new/").content.decode()


def test_it_refuses_to_approve_while_an_earlier_judge_job_is_still_labelling(client, people, pool):
    api = Api(client, people.users["bob"], people.project.pk)
    judge = api.post("/judges", {"name": "j", "endpoint": "http://127.0.0.1:9/v1", "model": "m"}).json()
    first = api.post("/routing/plans", {"budget": "6", "strategy": "random", "judge_config_id": judge["id"]}).json()
    job_id = api.post(f"/routing/plans/{first['id']}/approve").json()["job_id"]
    second = api.post("/routing/plans", {"budget": "6", "strategy": "random", "seed": 1,
                                         "judge_config_id": judge["id"]}).json()
    refused = api.post(f"/routing/plans/{second['id']}/approve")
    assert refused.status_code == 422
    assert f"LM labelling job {job_id} is still labelling 6 comparisons" in _errors(refused)["plan"]
    assert RoutingPlan.objects.get(pk=second["id"]).status == "draft"
    assert RoutingPlan.objects.get(pk=first["id"]).status == "approved"


@pytest.mark.django_db
def test_it_names_why_a_signal_job_cannot_start_on_the_page(client, people):
    client.force_login(people.users["bob"])
    response = client.post(f"/projects/{people.project.pk}/routing/reward-scores/", follow=True)
    assert "The registry has no reward model" in response.content.decode()
    response = client.post(f"/projects/{people.project.pk}/routing/embeddings/", follow=True)
    assert "no responses to embed: import a dataset first" in response.content.decode()
    client.force_login(people.users["carol"])
    assert client.post(f"/projects/{people.project.pk}/routing/embeddings/").status_code == 403
