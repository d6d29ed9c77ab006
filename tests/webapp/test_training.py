"""Training launches, the reward-model registry and resume: what is checked before a job is queued."""

import json
from pathlib import Path

import pytest
from django.conf import settings

from rlcore.training import tiny_models
from tests.conftest import token_for
from webapp.annotation.demo import seed_demo_comparisons
from webapp.annotation.models import Comparison
from webapp.annotation.services import lm_label_create
from webapp.jobs.models import Job, JobArtifact, JobState
from webapp.rubrics.services import reward_spec_create
from webapp.training.models import RewardModel
from webapp.training.services import register_trained_models

pytestmark = pytest.mark.django_db


def _api(client, user):
    headers = {"Authorization": f"Bearer {token_for(user)}"}

    def call(method, url, data=None):
        kwargs = {"data": data, "content_type": "application/json"} if data is not None else {}
        return getattr(client, method)(f"/api/v1/projects/{url}", headers=headers, **kwargs)

    return call


def _label_all(project, n=None):
    for comparison in Comparison.objects.filter(project=project)[:n]:
        lm_label_create(comparison=comparison, choice="a", strength=2, model_version="test-judge", provenance={})


def _job_dirs():
    root = Path(settings.ARTIFACT_ROOT) / "jobs"
    return set(root.iterdir()) if root.exists() else set()


@pytest.fixture
def labelled(people):
    seed_demo_comparisons(project=people.project, user=people.users["alice"])
    return people


def test_it_refuses_a_snapshot_with_too_few_labels_and_leaves_nothing_behind(client, labelled):
    _label_all(labelled.project, n=3)
    before = _job_dirs()
    response = _api(client, labelled.users["bob"])("post", f"{labelled.project.pk}/training/reward-model",
                                                   {"name": "rm", "spec": {"max_steps": 2}})
    assert response.status_code == 422
    [problem] = response.json()["detail"]
    assert problem["field"] == "snapshot" and "only 3 preference pairs" in problem["message"]
    assert not Job.objects.exists() and _job_dirs() == before


def test_it_names_a_bad_hyper_parameter_before_anything_is_queued(client, labelled):
    _label_all(labelled.project)
    api = _api(client, labelled.users["bob"])
    response = api("post", f"{labelled.project.pk}/training/reward-model", {"name": "rm", "spec": {"learning_rate": -1}})
    assert response.status_code == 422 and response.json()["detail"][0]["field"] == "spec.learning_rate"
    response = api("post", f"{labelled.project.pk}/training/reward-model", {"name": "rm", "spec": {"output_dir": "/etc"}})
    assert response.status_code == 422 and response.json()["detail"][0]["field"] == "spec.output_dir"
    response = api("post", f"{labelled.project.pk}/training/reward-model",
                   {"name": "rm", "spec": {"backbone": "/no/such/model"}})
    assert response.status_code == 422
    assert response.json()["detail"] == [{"field": "spec.backbone", "message": (
        "'/no/such/model' is not a model this project may use: pick one from the project's registry, a folder "
        f"under MODEL_ROOTS ({', '.join(settings.MODEL_ROOTS)}), or give a hub id.")}]
    assert not Job.objects.exists()


def test_it_freezes_the_labels_and_writes_the_spec_the_worker_runs(client, labelled):
    _label_all(labelled.project)
    response = _api(client, labelled.users["bob"])(
        "post", f"{labelled.project.pk}/training/reward-model",
        {"name": "helpful-rm", "tie_policy": "drop", "spec": {"max_steps": 5, "ensemble_size": 2}})
    assert response.status_code == 201, response.content
    job = Job.objects.get(pk=response.json()["id"])
    assert job.kind == "train_reward_model" and job.queue == "gpu" and job.state == JobState.QUEUED
    spec_path = Path(job.argv[2])
    assert job.argv[:2] == ["train", "reward-model"] and spec_path.parent == Path(job.output_dir)
    spec = json.loads(spec_path.read_text())
    assert spec["ensemble_size"] == 2 and spec["max_steps"] == 5 and spec["output_dir"] == job.output_dir
    rows = [json.loads(line) for line in Path(spec["preference_snapshot"]).read_text().splitlines()]
    assert len(rows) == Comparison.objects.filter(project=labelled.project).count()
    assert {"prompt", "chosen", "rejected"} <= set(rows[0])


def test_it_keeps_ties_as_ties_in_the_snapshot_and_records_what_the_export_dropped(client, labelled):
    comparisons = list(Comparison.objects.filter(project=labelled.project))
    for i, comparison in enumerate(comparisons):
        lm_label_create(comparison=comparison, choice="tie" if i % 3 == 0 else "a", strength=1,
                        model_version="test-judge", provenance={})
    ties = sum(1 for i in range(len(comparisons)) if i % 3 == 0)
    api = _api(client, labelled.users["bob"])
    response = api("post", f"{labelled.project.pk}/training/reward-model",
                   {"name": "rm-keep", "tie_policy": "keep", "spec": {"max_steps": 1, "split_by": "prompt"}})
    assert response.status_code == 201, response.content
    job = Job.objects.get(pk=response.json()["id"])
    assert job.spec["split_by"] == "prompt"
    rows = [json.loads(line) for line in Path(job.spec["preference_snapshot"]).read_text().splitlines()]
    assert sum(r["tie"] for r in rows) == ties and all(r["tie"] == (r["choice"] == "tie") for r in rows)
    assert job.spec["export"] == {"tie_policy": "keep", "labels_in": len(comparisons), "labels_kept": len(comparisons),
                                  "labels_dropped": {}, "rows_out": len(comparisons), "tie_rows": ties}
    client.force_login(labelled.users["bob"])
    page = client.get(f"/projects/{labelled.project.pk}/jobs/{job.pk}/").content.decode()
    assert f"Export: {len(comparisons)} labels → {len(comparisons)} rows (tie policy keep, {ties} tie rows)" in page
    # dropping the ties leaves too few pairs: the refusal says how many labels went in and what was dropped
    assert len(comparisons) - ties < 8
    response = api("post", f"{labelled.project.pk}/training/reward-model", {"name": "rm-drop", "tie_policy": "drop"})
    assert response.status_code == 422
    assert response.json()["detail"][0]["message"].startswith(
        f"The labels give only {len(comparisons) - ties} preference pairs from {len(comparisons)} labels "
        f"(with tie policy 'drop'; {ties} dropped: tie (tie policy 'drop'))")


def test_it_offers_the_held_out_split_on_the_launch_form(client, labelled):
    client.force_login(labelled.users["bob"])
    page = client.get(f"/projects/{labelled.project.pk}/training/reward-model/new/").content.decode()
    assert 'name="split_by"' in page and '<option value="prompt"' in page
    assert "target ½" in page


def test_it_lets_only_designers_and_owners_launch(client, labelled):
    _label_all(labelled.project)
    for role, status in (("annotator", 403), ("viewer", 403), ("outsider", 404)):
        response = _api(client, labelled.by_role[role])("post", f"{labelled.project.pk}/training/reward-model",
                                                       {"name": "rm"})
        assert response.status_code == status, role
    assert _api(client, labelled.users["dave"])("get", f"{labelled.project.pk}/reward-models").status_code == 200
    assert _api(client, labelled.users["carol"])("get", f"{labelled.project.pk}/reward-models").status_code == 403


def _finished_rm_job(people, tmp_path, complete=True):
    job = Job.objects.create(project=people.project, kind="train_reward_model", created_by=people.users["alice"],
                             state=JobState.SUCCEEDED, title="reward model: helpful", output_dir=str(tmp_path),
                             spec={"backbone": "b", "preference_snapshot": "/s.jsonl"})
    model_dir = tmp_path / "model"
    model_dir.mkdir(parents=True)
    if complete:
        (model_dir / "config.json").write_text("{}")
    JobArtifact.objects.create(job=job, type="reward_model", path=str(model_dir),
                               data={"metrics": {"accuracy": 0.93}, "member": 0})
    return job


def test_it_registers_only_complete_model_directories(people, tmp_path):
    job = _finished_rm_job(people, tmp_path / "a")
    [model] = register_trained_models(sender=Job, job=job)
    assert (model.name, model.metrics["accuracy"], model.snapshot_path) == ("helpful", 0.93, "/s.jsonl")
    half_written = _finished_rm_job(people, tmp_path / "b", complete=False)
    assert register_trained_models(sender=Job, job=half_written) == []
    assert RewardModel.objects.count() == 1


def test_the_registry_shows_the_pairs_and_interval_behind_each_accuracy(client, people, tmp_path):
    from scipy.stats import binomtest

    from rlcore.training.calibration import pair_metrics

    job = _finished_rm_job(people, tmp_path / "a")
    metrics = pair_metrics([1.0] * 9 + [-1.0] * 3 + [0.4, -0.4], ties=[False] * 12 + [True, True])
    data = {"rows_in": 140, "train_rows": 126, "held_out_rows": 14, "train_rows_kept": 120, "held_out_rows_kept": 14,
            "dropped": {"train: longer than max_length=64 tokens": 6, "held out: longer than max_length=64 tokens": 0},
            "split": {"by": "comparison", "groups": 100, "held_out_groups": 10, "note": ""}}
    JobArtifact.objects.filter(job=job).update(data={"metrics": metrics, "data": data, "member": 0})
    [model] = register_trained_models(sender=Job, job=job)
    assert model.metrics["n_pairs"] == 12 and model.metrics["data"] == data
    client.force_login(people.users["alice"])
    page = client.get(f"/projects/{people.project.pk}/training/").content.decode()
    reference = binomtest(9, 12).proportion_ci(method="wilson")
    assert f"0.750 <span class=\"muted\">[{reference.low:.2f}, {reference.high:.2f}]</span>" in page
    assert "12 held-out pairs" in page and "2 ties left out" in page
    assert "Snapshot: 140 rows → train 120, held out 14" in page and "6 dropped, train: longer than max_length" in page
    listed = _api(client, people.users["alice"])("get", f"{people.project.pk}/reward-models").json()
    assert listed[0]["metrics"]["accuracy_ci_low"] == pytest.approx(reference.low)


def test_it_refuses_grpo_with_a_reward_spec_whose_model_was_deleted(client, labelled, tmp_path):
    job = _finished_rm_job(labelled, tmp_path / "rm")
    [model] = register_trained_models(sender=Job, job=job)
    tiny_models.build_tiny_reward_model(Path(model.path))
    version = reward_spec_create(project=labelled.project, user=labelled.users["alice"], name="with-rm", definition={
        "name": "with-rm", "components": [{"kind": "reward_model", "name": "rm", "path": model.path, "weight": 1}]})
    api = _api(client, labelled.users["bob"])
    assert api("delete", f"{labelled.project.pk}/reward-models/{model.pk}").status_code == 204
    dataset_id = labelled.project.datasets.get().pk
    response = api("post", f"{labelled.project.pk}/training/grpo", {
        "dataset_id": dataset_id, "reward_spec_version_id": version.pk, "policy": model.path})
    assert response.status_code == 422
    [problem] = response.json()["detail"]
    assert problem["field"] == "reward_spec_version_id" and "deleted reward model(s) helpful" in problem["message"]
    assert api("get", f"{labelled.project.pk}/reward-models").json() == []


def test_it_resumes_only_failed_or_cancelled_training_jobs(client, people, tmp_path):
    job = _finished_rm_job(people, tmp_path)
    job.argv = ["train", "reward-model", "spec.json"]
    job.save()
    api = _api(client, people.users["bob"])
    response = api("post", f"{people.project.pk}/jobs/{job.pk}/resume")
    assert response.status_code == 422 and "this one is succeeded" in response.json()["detail"][0]["message"]
    Job.objects.filter(pk=job.pk).update(state=JobState.CANCELLED)
    (tmp_path / "checkpoints" / "checkpoint-2").mkdir(parents=True)  # what it resumes from
    response = api("post", f"{people.project.pk}/jobs/{job.pk}/resume")
    assert response.status_code == 201
    resumed = Job.objects.get(pk=response.json()["id"])
    assert resumed.argv == ["train", "reward-model", "spec.json", "--resume"]
    assert resumed.parent_id == job.pk and resumed.output_dir == job.output_dir


def test_it_prefills_the_launch_form_from_the_spec_and_from_a_clone(client, people, tmp_path):
    client.force_login(people.users["bob"])
    page = client.get(f"/projects/{people.project.pk}/training/reward-model/new/").content.decode()
    assert 'name="learning_rate"' in page and 'value="5e-05"' in page
    assert "Sequence-classification backbone" in page
    job = _finished_rm_job(people, tmp_path)
    job.spec = {**job.spec, "learning_rate": 0.0003, "ensemble_size": 3}
    job.save()
    page = client.get(f"/projects/{people.project.pk}/training/reward-model/new/?clone={job.pk}").content.decode()
    assert 'value="0.0003"' in page and 'value="3"' in page and "helpful (clone)" in page


def test_it_offers_registered_reward_models_in_the_spec_composer(client, people, tmp_path):
    [model] = register_trained_models(sender=Job, job=_finished_rm_job(people, tmp_path))
    client.force_login(people.users["bob"])
    page = client.get(f"/projects/{people.project.pk}/reward-specs/new/").content.decode()
    assert f'<option value="{model.path}">helpful (accuracy 0.930' in page
