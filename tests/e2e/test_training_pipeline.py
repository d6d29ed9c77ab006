"""The whole path a user walks, over real HTTP against real workers: import -> annotate ->
snapshot -> train a reward model on the shipped MiniLM -> registry -> reward spec -> GRPO on a
tiny policy -> cancel -> resume."""

import json

import httpx
import pytest

from rlcore.training import tiny_models
from tests.conftest import token_for, wait_for
from webapp.jobs.models import Job, JobState, MetricPoint

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.worker]


def _state(job_id):
    return Job.objects.get(pk=job_id).state


def _wait_finished(job_id, timeout):
    wait_for(lambda: Job.objects.get(pk=job_id).is_finished, timeout, 0.5, f"job {job_id} to finish")
    job = Job.objects.get(pk=job_id)
    assert job.state == JobState.SUCCEEDED, f"job {job_id} {job.state}: {job.error}\n{job.log_tail[-3000:]}"
    return job


@pytest.fixture
def api(app_server, people):
    with httpx.Client(base_url=f"{app_server}/api/v1/projects/{people.project.pk}",
                      headers={"Authorization": f"Bearer {token_for(people.users['alice'])}"}, timeout=60) as client:
        yield client


def _import_keyword_dataset(api, tmp_path, n):
    rows = tiny_models.keyword_preferences(n, seed=3)
    source = tmp_path / "pairs.jsonl"
    source.write_text("".join(json.dumps({"prompt": r["prompt"], "responses": [r["rejected"], r["chosen"]]}) + "\n"
                              for r in rows))
    with source.open("rb") as handle:
        created = api.post("/datasets", files={"file": ("pairs.jsonl", handle)}, data={"background": "false"})
    assert created.status_code == 201, created.text
    return created.json()["id"]


def _annotate_all(api):
    labelled = 0
    while True:
        item = api.post("/annotation/next")
        if item.status_code == 204:
            return labelled
        item = item.json()
        keyword_side = next(r["letter"] for r in item["responses"] if "thanks" in r["text"])
        response = api.post("/annotation/labels", json={"assignment_id": item["assignment_id"],
                                                        "choice": keyword_side, "strength": 2})
        assert response.status_code == 201, response.text
        labelled += 1


def test_it_goes_from_labels_to_a_registered_reward_model_to_grpo_with_cancel_and_resume(
        celery_workers, api, people, tmp_path):
    dataset_id = _import_keyword_dataset(api, tmp_path, n=64)
    assert api.post("/comparisons/build", json={"dataset_id": dataset_id}).json()["created"] == 64
    assert _annotate_all(api) == 64

    # A reward model on the real pretrained MiniLM, from a snapshot of those labels.
    launched = api.post("/training/reward-model", json={"name": "thanks-rm", "spec": {
        "backbone": str(tiny_models.minilm_path()), "num_train_epochs": 3, "learning_rate": 1e-4,
        "per_device_train_batch_size": 8, "max_length": 64, "eval_fraction": 0.25, "use_margin": True}})
    assert launched.status_code == 201, launched.text
    rm_job = _wait_finished(launched.json()["id"], 420)
    assert MetricPoint.objects.filter(job=rm_job, name="loss").exists()
    [registered] = api.get("/reward-models").json()
    assert registered["job_id"] == rm_job.pk and registered["name"] == "thanks-rm"
    assert registered["metrics"]["accuracy"] >= 0.9
    snapshot_rows = open(registered["snapshot_path"]).read().splitlines()
    assert len(snapshot_rows) == 64 and all("thanks" in json.loads(r)["chosen"] for r in snapshot_rows)

    # A reward spec that uses it, next to a rule, then GRPO on a tiny random policy.
    spec = api.post("/reward-specs", json={"name": "thanks", "definition": {"name": "thanks", "components": [
        {"kind": "reward_model", "name": "rm", "path": registered["path"], "weight": 1.0},
        {"kind": "length_penalty", "name": "brevity", "max_length": 6, "cache_length": 4, "unit": "tokens",
         "weight": 0.5}]}})
    assert spec.status_code == 201, spec.text
    version_id = spec.json()["id"]
    policy = tiny_models.build_tiny_causal_lm(tmp_path / "policy")
    grpo = api.post("/training/grpo", json={
        "dataset_id": dataset_id, "reward_spec_version_id": version_id, "policy": str(policy), "name": "tiny",
        "spec": {"max_steps": 40, "per_device_train_batch_size": 8, "num_generations": 4,
                 "max_completion_length": 8, "save_steps": 1, "sample_every": 1, "learning_rate": 1e-5}})
    assert grpo.status_code == 201, grpo.text
    grpo_id = grpo.json()["id"]
    wait_for(lambda: MetricPoint.objects.filter(job_id=grpo_id, name="rewards/rm/mean").count() >= 2, 300, 0.5,
             "GRPO to log per-component rewards")
    assert MetricPoint.objects.filter(job_id=grpo_id, name="rewards/brevity/mean").exists()
    assert Job.objects.get(pk=grpo_id).samples.exists()

    assert api.post(f"/jobs/{grpo_id}/cancel").status_code == 200
    wait_for(lambda: _state(grpo_id) == JobState.CANCELLED, 30, 0.5, "GRPO to be cancelled")
    stopped_at = max(MetricPoint.objects.filter(job_id=grpo_id).values_list("step", flat=True))
    resumed = api.post(f"/jobs/{grpo_id}/resume")
    assert resumed.status_code == 201, resumed.text
    resumed_job = _wait_finished(resumed.json()["id"], 600)
    assert resumed_job.parent_id == grpo_id and resumed_job.output_dir == Job.objects.get(pk=grpo_id).output_dir
    steps = sorted(set(MetricPoint.objects.filter(job=resumed_job, name="loss").values_list("step", flat=True)))
    assert steps and steps[0] > 1 and steps[0] <= stopped_at + 1 and steps[-1] == 40
