"""Routing end to end, over real HTTP against real Celery workers and a real loopback
OpenAI-compatible judge: approve a plan -> the LM job labels its side in both orders; pairs the judge
cannot label go back to people with the reason; an unreachable endpoint labels nothing; a re-run
uses the judge's signals; the API key appears nowhere."""

import json
import socket
from pathlib import Path

import httpx
import pytest

from rlcore.judges.testing_server import ChatCompletionsServer
from tests.conftest import token_for, wait_for
from tests.webapp.routing_helpers import judge_policy, keyword_rows, pairs_dataset
from webapp.annotation.models import Comparison, LabelSource, PreferenceLabel
from webapp.jobs.models import Job, JobState
from webapp.judging.models import LMLabelAttempt

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.worker]
SECRET = "sk-e2e-judge-key-5a6b7c8d9e0f"


@pytest.fixture
def api(app_server, people):
    with httpx.Client(base_url=f"{app_server}/api/v1/projects/{people.project.pk}",
                      headers={"Authorization": f"Bearer {token_for(people.users['bob'])}"}, timeout=60) as client:
        yield client


def _finished_plan(api, plan_id, timeout=60):
    def done():
        body = api.get(f"/routing/plans/{plan_id}").json()
        return body if "lm_pending" not in body["decision_counts"] else None

    return wait_for(done, timeout, 0.5, f"plan {plan_id}'s LM labels")


def test_it_labels_the_lm_side_in_both_orders_and_returns_refusals_to_people(api, people, celery_workers):
    pairs_dataset(project=people.project, user=people.users["alice"],
                  rows=keyword_rows(12, biased_every=3, refuse_every=4))
    with ChatCompletionsServer(judge_policy, api_key=SECRET) as server:
        judge = api.post("/judges", json={"name": "loopback", "endpoint": server.base_url, "model": "judge-1",
                                          "api_key": SECRET, "max_concurrency": 4, "timeout_s": 10}).json()
        plan = api.post("/routing/plans", json={"budget": "0", "strategy": "uncertainty"}).json()
        assert (plan["n_human"], plan["n_lm"]) == (0, 12)
        approved = api.post(f"/routing/plans/{plan['id']}/approve", json={"judge_config_id": judge["id"]})
        assert approved.status_code == 200, approved.text
        assert not any(c.is_active for c in Comparison.objects.filter(project=people.project))
        body = _finished_plan(api, plan["id"])
        assert server.stats.authorization_failures == 0 and server.stats.requests >= 24

    job = Job.objects.get(pk=body["job_id"])
    assert job.state == JobState.SUCCEEDED, job.error
    statuses = {d["comparison_id"]: d for d in body["decisions"]}
    refused = {c.pk for c in Comparison.objects.filter(prompt__text__startswith="REFUSE")}
    assert len(refused) == 3
    assert {cid for cid, d in statuses.items() if d["status"] == "returned"} == refused
    assert all("judge refused: I can't help with that." in statuses[cid]["reason"] for cid in refused)
    # Labels are never invented: refused pairs have none, and are back in the annotation queue.
    assert not PreferenceLabel.objects.filter(comparison_id__in=refused).exists()
    assert set(Comparison.objects.filter(is_active=True).values_list("pk", flat=True)) == refused
    item = api.post("/annotation/next").json()
    assert item["comparison_id"] in refused

    labels = {lab.comparison_id: lab for lab in PreferenceLabel.objects.filter(source=LabelSource.LM)}
    assert len(labels) == 9 and all(statuses[cid]["status"] == "lm_labelled" for cid in labels)
    for cid, label in labels.items():
        prov = label.provenance
        ab, ba = prov["orders"]["ab"], prov["orders"]["ba"]
        assert ab["rendered_prompt"] != ba["rendered_prompt"] and ab["raw_reply"] and ba["raw_reply"]
        assert prov["template"] == "default-compare@1" and prov["job_id"] == job.pk
        comparison = Comparison.objects.get(pk=cid)
        a_text = comparison.responses()[0].text
        if "thanks" in comparison.responses()[0].text + comparison.responses()[1].text:
            assert label.choice == ("a" if "thanks" in a_text else "b") and prov["position_bias"] is False
            assert prov["confidence_source"] == "logprobs" and prov["confidence"] == pytest.approx(0.9)
            assert label.strength == 2
        else:  # the judge said "A" both times: the orders disagree, a tie marked as position bias
            assert label.choice == "tie" and prov["position_bias"] is True and prov["confidence"] == 0.0
            assert (prov["forward_verdict"], prov["swapped_verdict"]) == ("A", "B")

    # The key is nowhere: job record, job log, API answers, files left in the job folder.
    job_api = api.get(f"/jobs/{job.pk}")
    assert job_api.status_code == 200
    leaks = [json.dumps(job.argv), json.dumps(job.spec), job.log_tail, job.error, job_api.text,
             api.get(f"/routing/plans/{plan['id']}").text, api.get("/judges").text]
    leaks += [p.read_text(errors="replace") for p in Path(job.output_dir).iterdir()]
    assert not any(SECRET in text for text in leaks)

    # Re-run as labels arrived: the same settings, now with the judge's signals; its doubt (position
    # bias) ranks those comparisons first, and a budget of 3 sends exactly them to people.
    rerun = api.post(f"/routing/plans/{plan['id']}/rerun").json()
    biased = {cid for cid, lab in labels.items() if lab.provenance["position_bias"]}
    scores = {d["comparison_id"]: d for d in rerun["decisions"]}
    assert rerun["parent_id"] == plan["id"] and rerun["n_total"] == 12
    assert min(scores[c]["score"] for c in biased) > max(scores[c]["score"] for c in labels if c not in biased)
    assert all(scores[c]["top_features"][0]["feature"] == "judge_position_disagreement" for c in biased)
    budgeted = api.post("/routing/plans", json={"budget": "3", "strategy": "uncertainty"}).json()
    assert {d["comparison_id"] for d in budgeted["decisions"] if d["route"] == "human"} == biased


def test_it_labels_nothing_when_the_endpoint_is_unreachable_and_gives_everything_back(api, people, celery_workers):
    pairs_dataset(project=people.project, user=people.users["alice"], rows=keyword_rows(5))
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    judge = api.post("/judges", json={"name": "down", "endpoint": f"http://127.0.0.1:{port}/v1", "model": "m",
                                      "timeout_s": 2, "max_retries": 1}).json()
    plan = api.post("/routing/plans", json={"budget": "1", "strategy": "random",
                                            "judge_config_id": judge["id"]}).json()
    api.post(f"/routing/plans/{plan['id']}/approve", json={})
    body = _finished_plan(api, plan["id"])
    assert body["decision_counts"] == {"human_queue": 1, "returned": 4}
    reasons = [d["reason"] for d in body["decisions"] if d["status"] == "returned"]
    assert all("judge call failed" in r for r in reasons), reasons
    assert not PreferenceLabel.objects.filter(source=LabelSource.LM).exists()
    assert LMLabelAttempt.objects.filter(status="failed").count() == 4
    assert Comparison.objects.filter(project=people.project, is_active=True).count() == 5


def test_it_gives_the_pairs_of_a_cancelled_judge_job_back_to_people_without_anyone_looking(api, people,
                                                                                           celery_workers):
    from rlcore.judges.testing_server import always
    from webapp.routing.models import RoutingDecision

    pairs_dataset(project=people.project, user=people.users["alice"], rows=keyword_rows(4))
    with ChatCompletionsServer(always("Verdict: A", delay_s=30)) as server:
        judge = api.post("/judges", json={"name": "slow", "endpoint": server.base_url, "model": "m",
                                          "timeout_s": 60}).json()
        plan = api.post("/routing/plans", json={"budget": "0", "strategy": "random",
                                                "judge_config_id": judge["id"]}).json()
        job_id = api.post(f"/routing/plans/{plan['id']}/approve", json={}).json()["job_id"]
        wait_for(lambda: server.stats.requests > 0, 30, 0.2, "the judge job to send requests")
        assert api.post(f"/jobs/{job_id}/cancel").status_code in (200, 202)
        # Only the workers' periodic recorder runs now: nothing reads the plan through the web.
        wait_for(lambda: RoutingDecision.objects.filter(plan_id=plan["id"], status="returned").count() == 4, 40,
                 0.5, "the cancelled job's pairs to go back to people")
    reasons = set(RoutingDecision.objects.filter(plan_id=plan["id"]).values_list("reason", flat=True))
    assert reasons == {"the labelling job was cancelled before reaching it"}
    assert Comparison.objects.filter(project=people.project, is_active=True).count() == 4
    assert not PreferenceLabel.objects.filter(source=LabelSource.LM).exists()


def test_it_labels_with_a_local_hugging_face_judge_and_a_saved_prompt_version(api, people, celery_workers,
                                                                              tmp_path):
    from test_judge_local_hf import SHORT, build_always_a_judge_model

    model_dir = build_always_a_judge_model(tmp_path / "judge")  # always answers "Verdict: A"
    rows = [{"prompt": f"w{i}", "responses": ["w1 w2 " * (i + 1), "w3 thanks"]} for i in range(3)]
    pairs_dataset(project=people.project, user=people.users["alice"], rows=rows)
    judge = api.post("/judges", json={"name": "local", "backend": "local_hf", "model": str(model_dir)}).json()
    assert api.post(f"/judges/{judge['id']}/test").json()["ok"] is True
    api.post("/judge-templates", json={"name": "short", "text": "draft {response_a} {response_b}"})
    template = api.post("/judge-templates", json={"name": "short", "text": SHORT.compare.text}).json()
    assert template["version"] == 2
    plan = api.post("/routing/plans", json={"budget": "0", "strategy": "random", "judge_config_id": judge["id"],
                                            "template_id": template["id"]}).json()
    api.post(f"/routing/plans/{plan['id']}/approve", json={})
    body = _finished_plan(api, plan["id"], timeout=90)
    assert body["decision_counts"] == {"lm_labelled": 3}, body["decisions"]
    for label in PreferenceLabel.objects.filter(source=LabelSource.LM):
        prov = label.provenance
        assert prov["template"] == "short@2" and prov["orders"]["ab"]["rendered_prompt"].startswith("w")
        assert "\n[A] " in prov["orders"]["ab"]["rendered_prompt"]
        assert prov["orders"]["ab"]["raw_reply"] == prov["orders"]["ba"]["raw_reply"] == "Verdict: A\nStrength: 2"
        assert (label.choice, prov["position_bias"], prov["confidence_source"]) == ("tie", True, "logprobs")


def test_it_embeds_responses_on_a_worker_and_routes_with_embedding_similarity(api, people, celery_workers):
    from webapp.routing.models import ResponseEmbedding

    pairs_dataset(project=people.project, user=people.users["alice"], rows=keyword_rows(8))
    without = api.post("/routing/plans", json={"budget": "25%", "strategy": "uncertainty"}).json()
    assert without["model_info"]["embeddings"] is False
    assert not any(name.startswith("cosine") for name in without["model_info"]["features"])

    job = api.post("/routing/embeddings")
    assert job.status_code == 201, job.text
    wait_for(lambda: Job.objects.get(pk=job.json()["id"]).is_finished, 120, 0.5, "the embedding job")
    assert Job.objects.get(pk=job.json()["id"]).state == JobState.SUCCEEDED
    responses = {rid for c in Comparison.objects.filter(project=people.project) for rid in c.response_ids}
    assert set(ResponseEmbedding.objects.values_list("response_id", flat=True)) == responses
    assert len(bytes(ResponseEmbedding.objects.first().vector)) == 384 * 4  # all-MiniLM-L6-v2, float32

    again = api.post("/routing/embeddings")
    assert again.status_code == 422 and "already has an embedding" in again.json()["detail"][0]["message"]
    with_embeddings = api.post("/routing/plans", json={"budget": "25%", "strategy": "uncertainty"}).json()
    assert with_embeddings["model_info"]["embeddings"] is True
    assert any(name.startswith("cosine") for name in with_embeddings["model_info"]["features"])


def test_it_scores_responses_with_the_registry_and_routes_on_reward_model_disagreement(api, people, celery_workers,
                                                                                     tmp_path):
    from rlcore.training import tiny_models
    from webapp.routing.models import ResponseRewardScore
    from webapp.training.models import RewardModel

    pairs_dataset(project=people.project, user=people.users["alice"], rows=keyword_rows(8))
    assert api.post("/routing/reward-scores").json()["detail"][0]["field"] == "reward_models"  # empty registry
    trainer = Job.objects.create(project=people.project, kind="train_reward_model", state=JobState.SUCCEEDED,
                                 created_by=people.users["alice"])
    for seed in (0, 1):  # an "ensemble" of two differently initialised models
        path = tiny_models.build_tiny_reward_model(tmp_path / f"rm{seed}", seed=seed)
        RewardModel.objects.create(project=people.project, job=trainer, name=f"rm{seed}", path=str(path),
                                   backbone="tiny", snapshot_path="", spec={})
    job = api.post("/routing/reward-scores")
    assert job.status_code == 201, job.text
    wait_for(lambda: Job.objects.get(pk=job.json()["id"]).is_finished, 180, 0.5, "the scoring job")
    finished = Job.objects.get(pk=job.json()["id"])
    assert finished.state == JobState.SUCCEEDED, finished.error
    responses = {rid for c in Comparison.objects.filter(project=people.project) for rid in c.response_ids}
    assert ResponseRewardScore.objects.count() == 2 * len(responses)

    plan = api.post("/routing/plans", json={"budget": "25%", "strategy": "uncertainty"}).json()
    assert any(name.startswith("rm_disagreement") for name in plan["model_info"]["features"])
