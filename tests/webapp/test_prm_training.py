"""Process reward models from the app (issue 13): launch checks, the stepwise snapshot frozen from step labels,
registration on success with per-step and first-error accuracy (counts and Wilson intervals), the composer."""

import json
from pathlib import Path

import pytest
from django.conf import settings

from tests.conftest import token_for
from webapp.annotation.models import Comparison, ComparisonKind
from webapp.annotation.services import step_items_build, step_lm_label_create
from webapp.datasets.models import Dataset
from webapp.jobs.models import Job, JobArtifact, JobState
from webapp.training.models import ProcessRewardModel
from webapp.training.services import register_trained_prms

pytestmark = pytest.mark.django_db


def _api(client, user):
    headers = {"Authorization": f"Bearer {token_for(user)}"}

    def call(method, url, data=None):
        kwargs = {"data": data, "content_type": "application/json"} if data is not None else {}
        return getattr(client, method)(f"/api/v1/projects/{url}", headers=headers, **kwargs)

    return call


def _step_items(client, people, n):
    from django.core.files.uploadedfile import SimpleUploadedFile

    rows = [{"prompt": f"q{i}", "responses": [f"take {i}\nadd {i}\nget {2 * i}"]} for i in range(n)]
    content = "".join(json.dumps(r) + "\n" for r in rows).encode()
    r = client.post(f"/api/v1/projects/{people.project.pk}/datasets",
                    {"file": SimpleUploadedFile("steps.jsonl", content), "step_rule": "newline"},
                    headers={"Authorization": f"Bearer {token_for(people.users['alice'])}"})
    assert r.status_code == 201, r.content
    step_items_build(project=people.project, dataset=Dataset.objects.get(pk=r.json()["id"]))
    return list(Comparison.objects.filter(project=people.project, kind=ComparisonKind.STEPS).order_by("pk"))


def _job_dirs():
    root = Path(settings.ARTIFACT_ROOT) / "jobs"
    return set(root.iterdir()) if root.exists() else set()


@pytest.fixture
def backbone(settings, tmp_path):
    folder = tmp_path / "models" / "tiny"
    folder.mkdir(parents=True)
    (folder / "config.json").write_text("{}")
    settings.MODEL_ROOTS = [str(tmp_path / "models")]
    return str(folder)


def test_it_refuses_too_few_step_labels_or_a_bad_setting_and_leaves_nothing_behind(client, people, backbone):
    for item in _step_items(client, people, 4):
        step_lm_label_create(comparison=item, grades=[1, 1, -1], model_version="judge")
    api = _api(client, people.users["bob"])
    before = _job_dirs()
    r = api("post", f"{people.project.pk}/training/prm", {"name": "p", "spec": {"backbone": backbone}})
    assert r.status_code == 422
    [problem] = r.json()["detail"]
    assert problem["field"] == "snapshot" and "4 step labels" in problem["message"]
    assert "at least 10" in problem["message"]
    r = api("post", f"{people.project.pk}/training/prm", {"name": "p", "spec": {}})
    assert r.status_code == 422 and r.json()["detail"][0]["field"] == "spec.backbone"
    r = api("post", f"{people.project.pk}/training/prm", {"name": "p", "spec": {"backbone": backbone,
                                                                                "learning_rate": -1}})
    assert r.status_code == 422 and r.json()["detail"][0]["field"] == "spec.learning_rate"
    r = api("post", f"{people.project.pk}/training/prm", {"name": "p", "spec": {"backbone": backbone,
                                                                                "step_snapshot": "/etc/passwd"}})
    assert r.status_code == 422 and r.json()["detail"][0]["field"] == "spec.step_snapshot"
    r = api("post", f"{people.project.pk}/training/prm", {"name": "p", "spec": {"backbone": "/srv/elsewhere"}})
    assert r.status_code == 422 and r.json()["detail"][0]["field"] == "spec.backbone"
    assert not Job.objects.exists() and _job_dirs() == before


def test_it_freezes_the_step_labels_as_a_stepwise_snapshot_and_queues_train_prm(client, people, backbone):
    items = _step_items(client, people, 14)
    for k, item in enumerate(items):
        step_lm_label_create(comparison=item, grades=[1, -1, -1] if k % 2 else [1, 1, 1], model_version="judge")
    api = _api(client, people.users["bob"])
    r = api("post", f"{people.project.pk}/training/prm",
            {"name": "steps-prm", "spec": {"backbone": backbone, "max_steps": 3, "step_separator": "\n"}})
    assert r.status_code == 201, r.content
    job = Job.objects.get(pk=r.json()["id"])
    assert job.kind == "train_prm" and job.argv[:2] == ["train", "prm"] and job.queue == "gpu"
    spec = json.loads(Path(job.argv[2]).read_text())
    assert spec["kind"] == "prm" and spec["max_steps"] == 3 and spec["backbone"] == backbone
    rows = [json.loads(line) for line in Path(spec["step_snapshot"]).read_text().splitlines()]
    assert len(rows) == 14 and Path(spec["step_snapshot"]).is_relative_to(job.output_dir)
    assert rows[1]["completions"] == ["take 1", "add 1", "get 2"] and rows[1]["labels"] == [True, False, False]
    assert job.spec["export"] == {"labels_in": 14, "rows_out": 14, "labels_dropped": {}, "source": "all"}
    # people's labels only: the LM pre-labels are left out and counted
    r = api("post", f"{people.project.pk}/training/prm", {"name": "h", "source": "human",
                                                           "spec": {"backbone": backbone}})
    assert r.status_code == 422 and "0 step labels" in r.json()["detail"][0]["message"]
    assert "14 left out: not human labels" in r.json()["detail"][0]["message"]


def _finished_prm_job(people, tmp_path, complete=True):
    job = Job.objects.create(project=people.project, kind="train_prm", created_by=people.users["alice"],
                             state=JobState.SUCCEEDED, title="process reward model: steps", output_dir=str(tmp_path),
                             spec={"backbone": "b", "step_snapshot": "/s/steps.jsonl", "step_separator": "\n",
                                   "export": {"source": "human"}})
    model_dir = tmp_path / "model"
    model_dir.mkdir(parents=True)
    if complete:
        (model_dir / "config.json").write_text(json.dumps({"architectures": ["LlamaForTokenClassification"]}))
        (model_dir / "rlcore_prm.json").write_text(json.dumps({"step_separator": "\n"}))
    from rlcore.training.prm import step_metrics

    # 9 of 10 held-out steps right (hand count), 3 of 4 first errors right
    predicted = [[True, True, False], [True, False], [True, True, True], [False, True]]
    truth = [[True, True, False], [True, False], [True, True, False], [False, True]]
    metrics = step_metrics(predicted, truth)
    data = {"rows_in": 40, "train_rows": 32, "held_out_rows": 8, "train_rows_kept": 31, "held_out_rows_kept": 4,
            "dropped": {"no labels": 0, "train: longer than max_length=64 tokens": 1}, "split": {"by": "response"}}
    JobArtifact.objects.create(job=job, type="process_reward_model", path=str(model_dir),
                               data={"metrics": metrics, "data": data, "step": 5})
    return job


def test_a_finished_run_registers_its_prm_with_counts_and_intervals(client, people, tmp_path):
    from scipy.stats import binomtest

    assert register_trained_prms(sender=Job, job=_finished_prm_job(people, tmp_path / "b", complete=False)) == []
    [prm] = register_trained_prms(sender=Job, job=_finished_prm_job(people, tmp_path / "a"))
    assert (prm.name, prm.step_separator, prm.snapshot_path) == ("steps", "\n", "/s/steps.jsonl")
    assert ProcessRewardModel.objects.count() == 1
    assert prm.metrics["step_accuracy"] == pytest.approx(9 / 10) and prm.metrics["n_steps"] == 10
    assert prm.metrics["first_error_accuracy"] == pytest.approx(3 / 4) and prm.metrics["n_responses"] == 4
    steps_ci = binomtest(9, 10).proportion_ci(method="wilson")
    first_ci = binomtest(3, 4).proportion_ci(method="wilson")
    listed = _api(client, people.users["alice"])("get", f"{people.project.pk}/process-reward-models").json()
    assert listed[0]["metrics"]["step_accuracy_interval"] == pytest.approx([steps_ci.low, steps_ci.high])
    assert listed[0]["metrics"]["first_error_accuracy_interval"] == pytest.approx([first_ci.low, first_ci.high])
    assert _api(client, people.users["carol"])("get", f"{people.project.pk}/process-reward-models").status_code == 403
    client.force_login(people.users["alice"])
    page = client.get(f"/projects/{people.project.pk}/training/").content.decode()
    assert f"0.900 <span class=\"muted\">[{steps_ci.low:.2f}, {steps_ci.high:.2f}]</span>" in page
    assert f"0.750 <span class=\"muted\">[{first_ci.low:.2f}, {first_ci.high:.2f}]</span>" in page
    assert "10 held-out steps" in page and "4 held-out responses" in page
    assert "40 stepwise rows in (human labels): 31 trained on, 4 held out; 1 dropped: train: longer" in page
    assert "Train a process reward model" in page


def test_the_composer_offers_the_registered_prm_and_the_spec_check_accepts_it(client, people, tmp_path):
    [prm] = register_trained_prms(sender=Job, job=_finished_prm_job(people, tmp_path))
    client.force_login(people.users["bob"])
    base = f"/projects/{people.project.pk}/reward-specs"
    page = client.get(f"{base}/new/").content.decode()
    assert '<option value="process_reward_model">' in page
    assert f'<option value="{prm.path}">steps (first-error accuracy 0.750 of 4, job #{prm.job_id})' in page
    added = client.post(f"{base}/add-component/", {"yaml": "name: s\ncomponents: []\n",
                                                   "add_kind": "process_reward_model", "add_name": "steps"})
    assert added.status_code == 200
    text = added.content.decode()
    assert "kind: process_reward_model" in text and f"path: {prm.path}" in text
    checked = client.post(f"{base}/check/", {"yaml": (
        f"name: s\ncomponents:\n  - kind: process_reward_model\n    name: steps\n    path: {prm.path}\n"
        "    aggregation: min\n    weight: 1.0\n")})
    assert checked.status_code == 200
    body = checked.content.decode()
    assert "state-succeeded" in body and "only a worker runs" in body and 'class="errorlist"' not in body
