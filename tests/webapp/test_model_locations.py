"""A member may point a job only at models their project may use: its registry and job folders,
folders under MODEL_ROOTS, or hub ids; the answer never tells whether a server folder exists."""

import pytest

from tests.conftest import token_for
from webapp.jobs.models import Job
from webapp.training.model_locations import model_location_problem
from webapp.training.models import RewardModel

pytestmark = pytest.mark.django_db


def _model_folder(path):
    path.mkdir(parents=True)
    (path / "config.json").write_text("{}")
    return path


def _registered(project, user, settings, name):
    """A reward model in ``project``'s registry, in its job's folder under ARTIFACT_ROOT."""
    job = Job.objects.create(project=project, kind="train_reward_model", created_by=user, state="succeeded")
    folder = _model_folder(settings.ARTIFACT_ROOT / "jobs" / f"test-{job.pk}" / "model")
    job.output_dir = str(folder.parent)
    job.save()
    RewardModel.objects.create(project=project, job=job, name=name, path=str(folder), backbone="b",
                               snapshot_path="/s.jsonl", spec={})
    return folder


@pytest.fixture
def roots(settings, tmp_path):
    settings.MODEL_ROOTS = [str(tmp_path / "models")]
    return tmp_path / "models"


def test_it_allows_the_projects_own_registry_entries_and_hub_ids(people, settings, roots):
    own = _registered(people.project, people.users["alice"], settings, "own")
    assert model_location_problem(project=people.project, location=str(own)) is None
    assert model_location_problem(project=people.project, location="Qwen/Qwen2.5-0.5B") is None


def test_it_refuses_another_projects_model_even_under_a_model_root(people, settings, tmp_path):
    settings.MODEL_ROOTS = [str(settings.ARTIFACT_ROOT)]  # an operator's mistake must not open other projects
    theirs = _registered(people.other_project, people.users["eve"], settings, "eve's")
    problem = model_location_problem(project=people.project, location=str(theirs))
    assert problem and "is not a model this project may use" in problem


def test_it_allows_folders_under_model_roots_and_follows_symlinks(people, roots, tmp_path):
    inside = _model_folder(roots / "judge")
    assert model_location_problem(project=people.project, location=str(inside)) is None
    outside = _model_folder(tmp_path / "elsewhere")
    (roots / "link").symlink_to(outside)
    assert "is not a model this project may use" in model_location_problem(project=people.project,
                                                                          location=str(roots / "link"))


def test_it_answers_the_same_for_a_server_folder_and_a_missing_one(people, roots):
    existing = model_location_problem(project=people.project, location="/etc")
    missing = model_location_problem(project=people.project, location="/no/such/folder")
    assert existing.replace("/etc", "X") == missing.replace("/no/such/folder", "X")


def test_it_refuses_a_relative_path_the_worker_would_read_elsewhere(people, roots):
    assert "relative path" in model_location_problem(project=people.project, location="runs/42/model")


def test_a_reward_model_launch_refuses_another_projects_model_as_backbone(client, people, settings, roots):
    theirs = _registered(people.other_project, people.users["eve"], settings, "eve's")
    r = client.post(f"/api/v1/projects/{people.project.pk}/training/reward-model",
                    {"name": "rm", "spec": {"backbone": str(theirs)}}, content_type="application/json",
                    headers={"Authorization": f"Bearer {token_for(people.users['bob'])}"})
    assert r.status_code == 422
    assert r.json()["detail"][0]["field"] == "spec.backbone"
    assert "is not a model this project may use" in r.json()["detail"][0]["message"]


def test_a_local_judge_may_not_probe_server_folders(client, people, roots):
    headers = {"Authorization": f"Bearer {token_for(people.users['bob'])}"}
    base = f"/api/v1/projects/{people.project.pk}/judges"
    r = client.post(base, {"name": "probe", "backend": "local_hf", "model": "/etc"}, content_type="application/json",
                    headers=headers)
    assert r.status_code == 422 and r.json()["detail"][0]["field"] == "model"
    ok = _model_folder(roots / "judge")
    created = client.post(base, {"name": "local", "backend": "local_hf", "model": str(ok)},
                          content_type="application/json", headers=headers)
    assert created.status_code == 201, created.content


def test_a_process_reward_models_path_is_checked_like_a_reward_models(client, people, settings, roots):
    """Serving (and a GRPO launch, through the same check) refuses a process reward model the project may not use."""
    from webapp.rubrics.models import RewardSpec, RewardSpecVersion

    theirs = _registered(people.other_project, people.users["eve"], settings, "eve's prm")
    spec = RewardSpec.objects.create(project=people.project, name="steps", created_by=people.users["bob"])
    RewardSpecVersion.objects.create(spec=spec, number=1, created_by=people.users["bob"], definition={
        "name": "steps", "components": [
            {"kind": "length_penalty", "name": "long", "max_length": 8, "cache_length": 4},
            {"kind": "process_reward_model", "name": "steps", "path": str(theirs)}]})
    r = client.post(f"/api/v1/projects/{people.project.pk}/reward-specs/{spec.pk}/versions/1/serve", {},
                    content_type="application/json", headers={"Authorization": f"Bearer {token_for(people.users['bob'])}"})
    assert r.status_code == 422
    assert r.json()["detail"][0]["field"] == "reward_spec.components.1.path"
    assert "is not a model this project may use" in r.json()["detail"][0]["message"]
    assert not Job.objects.filter(project=people.project, kind="serve_reward").exists()
