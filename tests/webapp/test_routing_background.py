"""A pool above ROUTING_INLINE_POOL is planned by a background job (issue 16): the request freezes the pool
as a file, a real Celery worker runs ``python -m rlcore routing plan --comparisons``, and the recorded plan
routes the same comparisons as the inline path on the same data."""

import json
from pathlib import Path

import pytest

from tests.conftest import PASSWORD, token_for, wait_for
from tests.webapp.routing_helpers import keyword_rows, pairs_dataset
from webapp.annotation.models import Comparison
from webapp.annotation.services import lm_label_create
from webapp.jobs.models import Job
from webapp.routing.models import RoutingPlan

pytestmark = pytest.mark.django_db(transaction=True)


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
    pairs_dataset(project=people.project, user=people.users["alice"], rows=keyword_rows(30, biased_every=3))
    comparisons = list(Comparison.objects.filter(project=people.project).order_by("id"))
    # Judge signals, so that 'uncertainty' has something to rank by: position bias on every third.
    for i, c in enumerate(comparisons):
        lm_label_create(comparison=c, choice="tie" if i % 3 == 2 else "a", model_version="m",
                        provenance={"position_bias": i % 3 == 2, "confidence": 0.2 + (i % 7) / 10})
    return comparisons


def _routes(body) -> dict[int, str]:
    return {d["comparison_id"]: d["route"] for d in body["decisions"]}


@pytest.mark.parametrize("strategy, budget", [("random", "7"), ("uncertainty", "25%")])
def test_it_plans_a_pool_above_the_limit_as_a_job_and_routes_as_the_inline_path_does(
        client, people, pool, settings, celery_workers, strategy, budget):
    api = Api(client, people.users["bob"], people.project.pk)
    settings.ROUTING_INLINE_POOL = 100
    inline = api.post("/routing/plans", {"budget": budget, "strategy": strategy, "seed": 5})
    assert inline.status_code == 201, inline.content

    settings.ROUTING_INLINE_POOL = 29  # the pool is 30: planned in the background
    pending = api.post("/routing/plans", {"budget": budget, "strategy": strategy, "seed": 5})
    assert pending.status_code == 202, pending.content
    body = pending.json()
    assert body["status"] == "pending" and body["decisions"] == [] and body["planning_job_id"]
    job = Job.objects.get(pk=body["planning_job_id"])
    frozen = (Path(job.output_dir) / "comparisons.jsonl").read_text().splitlines()
    assert [int(json.loads(line)["comparison_id"]) for line in frozen] == [c.pk for c in pool]

    wait_for(lambda: RoutingPlan.objects.get(pk=body["id"]).status != "pending", 120, 0.5, "the planning job")
    done = api.get(f"/routing/plans/{body['id']}").json()
    assert done["status"] == "draft", (done["error"], Job.objects.get(pk=job.pk).log_tail)
    expected = inline.json()
    assert _routes(done) == _routes(expected)
    assert (done["n_total"], done["n_human"], done["n_lm"]) == (expected["n_total"], expected["n_human"],
                                                                expected["n_lm"])
    assert [d["score"] for d in done["decisions"]] == pytest.approx([d["score"] for d in expected["decisions"]])
    assert done["top_features"] == expected["top_features"]


def test_it_shows_a_pending_plan_with_progress_then_the_reason_it_failed(client, people, pool, settings):
    settings.ROUTING_INLINE_POOL = 10
    client.login(username="bob", password=PASSWORD)
    answer = client.post(f"/projects/{people.project.pk}/routing/", {"budget": "5", "strategy": "random"})
    plan = RoutingPlan.objects.get()
    assert answer.status_code == 302 and plan.status == "pending" and plan.n_total == 30
    page = client.get(f"/projects/{people.project.pk}/routing/plans/{plan.pk}/").content.decode()
    assert 'id="plan-progress"' in page and 'hx-trigger="every 2s"' in page and "30 comparisons" in page
    assert 'id="approve"' not in page and "[" not in page.split('id="plan-progress"')[1].split(">")[0]

    from webapp.jobs.services import job_claim, job_finish, job_record_events

    job_claim(job_id=plan.planning_job_id, worker="test")
    job_record_events(job_id=plan.planning_job_id, events=[{"kind": "progress", "step": 12, "total": 30}])
    status = client.get(f"/projects/{people.project.pk}/routing/plans/{plan.pk}/?part=status",
                        headers={"HX-Request": "true"})
    assert "12 of 30 comparisons" in status.content.decode() and "HX-Refresh" not in status

    job_finish(job_id=plan.planning_job_id, state="failed", error="routing plan: out of memory (exit -9)")
    plan.refresh_from_db()
    assert plan.status == "failed" and "out of memory" in plan.error
    status = client.get(f"/projects/{people.project.pk}/routing/plans/{plan.pk}/?part=status",
                        headers={"HX-Request": "true"})
    assert status["HX-Refresh"] == "true"  # the page it reloads tells why
    page = client.get(f"/projects/{people.project.pk}/routing/plans/{plan.pk}/").content.decode()
    assert "out of memory (exit -9)" in page and 'hx-trigger="every 2s"' not in page
    refused = client.post(f"/projects/{people.project.pk}/routing/plans/{plan.pk}/approve/", {})
    assert refused.status_code == 302 and RoutingPlan.objects.get(pk=plan.pk).status == "failed"


def test_it_refuses_topk_above_the_limit_naming_the_strategy(client, people, pool, settings):
    settings.ROUTING_INLINE_POOL = 10
    api = Api(client, people.users["bob"], people.project.pk)
    refused = api.post("/routing/plans", {"budget": "5", "strategy": "topk"})
    assert refused.status_code == 422
    detail = {d["field"]: d["message"] for d in refused.json()["detail"]}
    assert "ROUTING_INLINE_POOL" in detail["strategy"] and "30 pairwise comparisons" in detail["strategy"]
    assert RoutingPlan.objects.count() == 0 and Job.objects.count() == 0


def test_it_fails_a_pending_plan_whose_job_is_cancelled_before_it_started(client, people, pool, settings):
    from webapp.jobs.services import job_request_cancel

    from django.db import transaction

    settings.ROUTING_INLINE_POOL = 10
    api = Api(client, people.users["bob"], people.project.pk)
    # The job reaches the broker when the request's transaction commits; cancelling it in the same transaction
    # is "before it started" for sure (a worker left running by an earlier test could otherwise claim it first).
    with transaction.atomic():
        body = api.post("/routing/plans", {"budget": "5", "strategy": "random"}).json()
        job_request_cancel(job=Job.objects.get(pk=body["planning_job_id"]))
    plan = RoutingPlan.objects.get(pk=body["id"])
    assert plan.status == "failed" and "Cancelled before it started" in plan.error
