"""The process-reward loop over real HTTP against real workers (issue 13): step labels posted through the API on a
learnable synthetic step set -> a PRM trained from the app on a tiny model -> registered with its held-out figures ->
a reward spec with a process_reward_model component on it -> GRPO on a tiny policy logging rewards/<name>/mean."""

import json

import httpx
import pytest

from rlcore.training import tiny_models
from tests.conftest import token_for, wait_for
from tests.rlcore.step_data import synthetic_steps
from webapp.jobs.models import Job, JobState, MetricPoint

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.worker]


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


def test_step_labels_train_a_prm_in_the_app_that_a_grpo_run_uses_as_a_component(celery_workers, api, tmp_path):
    rows = synthetic_steps(120, seed=2)
    truth = {r["prompt"]: r["labels"] for r in rows}
    source = tmp_path / "steps.jsonl"
    source.write_text("".join(json.dumps({"prompt": r["prompt"], "responses": ["\n".join(r["completions"])]}) + "\n"
                              for r in rows))
    with source.open("rb") as handle:
        created = api.post("/datasets", files={"file": ("steps.jsonl", handle)},
                           data={"background": "false", "step_rule": "newline"})
    assert created.status_code == 201, created.text
    dataset_id = created.json()["id"]
    assert api.post("/steps/build", json={"dataset_id": dataset_id}).json() == {"created": 120}

    labelled = 0
    while (item := api.post("/annotation/steps/next")).status_code == 200:
        item = item.json()
        labels = truth[item["prompt"]] if isinstance(item.get("prompt"), str) else truth[item["prompt"]["text"]]
        assert len(item["steps"]) == len(labels)
        r = api.post("/annotation/steps/labels", json={"assignment_id": item["assignment_id"],
                                                        "grades": [1 if good else -1 for good in labels]})
        assert r.status_code == 201, r.text
        labelled += 1
    assert labelled == 120

    backbone = tiny_models.build_tiny_causal_lm(tmp_path / "prm-backbone")
    launched = api.post("/training/prm", json={"name": "sorry-prm", "source": "human", "spec": {
        "backbone": str(backbone), "max_steps": 80, "learning_rate": 3e-3, "per_device_train_batch_size": 16,
        "max_length": 128, "save_steps": 1000, "logging_steps": 20, "seed": 1}})
    assert launched.status_code == 201, launched.text
    prm_job = _wait_finished(launched.json()["id"], 240)
    assert MetricPoint.objects.filter(job=prm_job, name="eval_first_error_accuracy").exists()
    [prm] = api.get("/process-reward-models").json()
    assert prm["job_id"] == prm_job.pk and prm["name"] == "sorry-prm"
    metrics = prm["metrics"]
    assert metrics["n_responses"] == metrics["data"]["held_out_rows_kept"] > 0 and metrics["n_steps"] > 0
    assert metrics["first_error_accuracy"] > 0.7, metrics  # "sorry" marks the first wrong step: learnable
    low, high = metrics["first_error_accuracy_interval"]
    assert low < metrics["first_error_accuracy"] <= high
    assert len(open(prm["snapshot_path"]).read().splitlines()) == 120

    spec = api.post("/reward-specs", json={"name": "process", "definition": {"name": "process", "components": [
        {"kind": "process_reward_model", "name": "steps", "path": prm["path"], "aggregation": "min", "weight": 1.0,
         "split": {"kind": "regex", "pattern": r"\s+", "min_steps": 1}},
        {"kind": "length_penalty", "name": "brevity", "max_length": 6, "cache_length": 4, "unit": "tokens",
         "weight": 0.1}]}})
    assert spec.status_code == 201, spec.text
    policy = tiny_models.build_tiny_causal_lm(tmp_path / "policy")
    grpo = api.post("/training/grpo", json={
        "dataset_id": dataset_id, "reward_spec_version_id": spec.json()["id"], "policy": str(policy),
        "name": "with-prm", "spec": {"max_steps": 2, "per_device_train_batch_size": 8, "num_generations": 4,
                                     "max_completion_length": 8, "save_steps": 100, "learning_rate": 1e-5}})
    assert grpo.status_code == 201, grpo.text
    grpo_job = _wait_finished(grpo.json()["id"], 240)
    process = list(MetricPoint.objects.filter(job=grpo_job, name="rewards/steps/mean").values_list("value", flat=True))
    assert process and all(0.0 <= v <= 1.0 for v in process), process  # the PRM component scored the rollouts
