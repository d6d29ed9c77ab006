"""The policy registry: a finished GRPO run registers its policy with what it rests on; a designer registers a
checkpoint, a folder, a hub id or an endpoint; a bad one is refused with a message naming it, leaving nothing."""

import json

import pytest

from tests.conftest import token_for
from webapp.jobs.models import Job, JobState
from webapp.jobs.services import job_finish, job_record_events
from webapp.training.models import Policy
from webapp.jobs.kinds import GRPO_KIND

pytestmark = pytest.mark.django_db

CAUSAL = {"model_type": "qwen2", "architectures": ["Qwen2ForCausalLM"]}


def _folder(path, config=CAUSAL):
    path.mkdir(parents=True)
    (path / "config.json").write_text(json.dumps(config))
    return path


def _grpo_run(people, settings, *, spec_version=None):
    job = Job.objects.create(project=people.project, kind=GRPO_KIND, created_by=people.users["bob"],
                             state=JobState.RUNNING, title="GRPO: terse answers")
    out = settings.ARTIFACT_ROOT / "jobs" / f"grpo-{job.pk}"
    job.output_dir = str(out)
    job.spec = {"policy": "/m/start", "prompt_snapshot": str(out / "snapshot" / "prompts.jsonl"),
                "reward_spec_version_id": spec_version.pk if spec_version else None}
    job.save()
    _folder(out / "checkpoints" / "checkpoint-2")
    return job, out


def _api(client, user, method, url, body=None):
    return getattr(client, method)(url, body, content_type="application/json",
                                   headers={"Authorization": f"Bearer {token_for(user)}"})


def test_a_finished_grpo_run_registers_its_policy_with_run_snapshot_and_metrics(people, settings):
    job, out = _grpo_run(people, settings)
    _folder(out / "model")
    job_record_events(job_id=job.pk, events=[
        {"kind": "metric", "step": 2, "name": "reward", "value": 0.5},
        {"kind": "artifact", "type": "policy", "path": str(out / "model"), "step": 4, "metrics": {"reward": 0.75}}])
    assert job_finish(job_id=job.pk, state=JobState.SUCCEEDED)
    [policy] = Policy.objects.filter(project=people.project)
    assert (policy.source, policy.location, policy.job_id, policy.step) == ("grpo_run", str(out / "model"), job.pk, 4)
    assert policy.metrics == {"reward": 0.75} and policy.snapshot_path.endswith("snapshot/prompts.jsonl")
    assert policy.name == "terse answers"


def test_a_run_whose_policy_folder_vanished_registers_nothing(people, settings):
    job, out = _grpo_run(people, settings)
    job_record_events(job_id=job.pk, events=[{"kind": "artifact", "type": "policy", "path": str(out / "model")}])
    assert job_finish(job_id=job.pk, state=JobState.SUCCEEDED)
    assert not Policy.objects.filter(project=people.project).exists()


def test_a_designer_registers_a_checkpoint_with_the_runs_metrics_at_that_step(client, people, settings):
    job, out = _grpo_run(people, settings)
    job_record_events(job_id=job.pk, events=[{"kind": "metric", "step": s, "name": "kl", "value": v}
                                             for s, v in ((1, 0.1), (2, 0.2), (3, 0.3))])
    url = f"/api/v1/projects/{people.project.pk}/policies"
    r = _api(client, people.users["bob"], "post", url, {"source": "checkpoint", "job_id": job.pk, "step": 2})
    assert r.status_code == 201, r.content
    body = r.json()
    assert body["path"] == str(out / "checkpoints" / "checkpoint-2") and body["step"] == 2
    assert body["metrics"] == {"kl": 0.2} and body["job_id"] == job.pk
    missing = _api(client, people.users["bob"], "post", url, {"source": "checkpoint", "job_id": job.pk, "step": 7})
    assert missing.status_code == 422
    assert missing.json()["detail"][0] == {"field": "step", "message": (
        f"GRPO run #{job.pk} has no checkpoint at step 7 (checkpoints: 2); pick one of those.")}
    listed = _api(client, people.users["dave"], "get", url).json()
    assert [p["step"] for p in listed] == [2]


def test_a_folder_that_is_not_a_causal_lm_is_refused_and_nothing_is_registered(client, people, settings, tmp_path):
    settings.MODEL_ROOTS = [str(tmp_path)]
    encoder = _folder(tmp_path / "encoder", {"model_type": "bert", "architectures": ["BertModel"]})
    url = f"/api/v1/projects/{people.project.pk}/policies"
    r = _api(client, people.users["bob"], "post", url, {"source": "folder", "location": str(encoder)})
    assert r.status_code == 422
    [error] = r.json()["detail"]
    assert error["field"] == "location" and "is not a causal language model (BertModel)" in error["message"]
    assert not Policy.objects.exists()
    good = _folder(tmp_path / "policy")
    r = _api(client, people.users["bob"], "post", url, {"source": "folder", "location": str(good), "name": "mine"})
    assert r.status_code == 201 and r.json()["label"] == "mine (local model folder)"
    again = _api(client, people.users["bob"], "post", url, {"source": "folder", "location": str(good)})
    assert again.status_code == 422 and "Already registered as 'mine'" in again.json()["detail"][0]["message"]


def test_a_folder_outside_the_projects_reach_is_refused(client, people, settings, tmp_path):
    settings.MODEL_ROOTS = [str(tmp_path / "models")]
    r = _api(client, people.users["bob"], "post", f"/api/v1/projects/{people.project.pk}/policies",
             {"source": "folder", "location": "/etc"})
    assert r.status_code == 422 and "is not a model this project may use" in r.json()["detail"][0]["message"]


def test_an_endpoint_keeps_its_key_encrypted_and_env_names_follow_the_judge_allowlist(client, people, settings):
    settings.JUDGE_KEY_ENV_ALLOWLIST = ["POLICY_KEY"]
    url = f"/api/v1/projects/{people.project.pk}/policies"
    refused = _api(client, people.users["bob"], "post", url, {
        "source": "endpoint", "endpoint_url": "http://127.0.0.1:9/v1", "location": "m", "api_key_env": "SECRET_KEY"})
    assert refused.status_code == 422 and refused.json()["detail"][0]["field"] == "api_key_env"
    r = _api(client, people.users["bob"], "post", url, {
        "source": "endpoint", "endpoint_url": "http://127.0.0.1:9/v1/", "location": "m", "api_key": "sk-abc"})
    assert r.status_code == 201 and r.json()["key_source"] == "stored (encrypted)" and "sk-abc" not in r.text
    policy = Policy.objects.get(pk=r.json()["id"])
    assert policy.endpoint_url == "http://127.0.0.1:9/v1" and "sk-abc" not in policy.api_key_encrypted
    from webapp.endpoint_keys import decrypt_api_key

    assert decrypt_api_key(policy.api_key_encrypted) == "sk-abc"


def test_a_viewer_cannot_register_and_another_project_is_invisible(client, people):
    url = f"/api/v1/projects/{people.project.pk}/policies"
    assert _api(client, people.users["dave"], "post", url, {"source": "hub", "location": "a/b"}).status_code == 403
    assert _api(client, people.users["eve"], "get", url).status_code in (403, 404)


def test_the_demo_policy_is_registered_and_offered_first_with_its_label(people, settings, tmp_path):
    from rlcore.training.demo_policy import DEMO_POLICY_LABEL, MARKER_FILE

    # A stand-in demo policy (no weights) of its own: in the session's VAR_DIR it would pass for the real
    # one, and seed_demo would reuse it later instead of building it.
    settings.VAR_DIR = tmp_path
    settings.MODEL_ROOTS = [str(tmp_path / "models")]
    from webapp.training.demo import demo_policy_dir
    from webapp.training.selectors import known_policies
    from webapp.training.services import demo_policy_register, policy_register

    demo = _folder(demo_policy_dir())
    (demo / MARKER_FILE).write_text(json.dumps({"label": DEMO_POLICY_LABEL}))
    policy_register(project=people.project, user=people.users["bob"], source="hub", location="Qwen/Qwen2.5-0.5B")
    assert demo_policy_register(project=people.project) == demo_policy_register(project=people.project)
    assert known_policies(project=people.project) == [
        (str(demo), DEMO_POLICY_LABEL), ("Qwen/Qwen2.5-0.5B", "Qwen/Qwen2.5-0.5B (hugging face hub id)")]
