"""Launching the checkpoint-scoring job from the app (issue 11): the REST route and the run's over-optimisation
page refuse bad input naming the field (422) and write nothing; an LM-judge gold gets the stored judge's key in a
0600 file in the job folder (never argv, spec or job record), which a real worker's child reads and deletes while
the loopback judge server checks the key on every request."""

import json
import stat
from pathlib import Path

import pytest

from rlcore.judges.testing_server import ChatCompletionsServer, always
from tests.conftest import token_for, wait_for
from tests.webapp.test_rounds_scoring_job import _grpo_run, _prompt_set
from webapp.jobs.models import Job, JobState
from webapp.rounds.models import OveroptimizationReport

pytestmark = pytest.mark.django_db(transaction=True)

SECRET = "sk-gold-judge-never-shown"
JUDGED = {"name": "gold judge", "components": [{"kind": "rubric_judge", "name": "judged", "rubric": {
    "name": "r", "criteria": [{"name": "helpful", "description": "answers the question"}]}}]}


def _api(client, user, method, url, body=None):
    return getattr(client, method)(url, body, content_type="application/json",
                                   headers={"Authorization": f"Bearer {token_for(user)}"})


def _judge(client, people, endpoint):
    r = _api(client, people.users["bob"], "post", f"/api/v1/projects/{people.project.pk}/judges",
             {"name": "gold", "endpoint": endpoint, "model": "judge-1", "api_key": SECRET, "max_retries": 0})
    assert r.status_code == 201, r.content
    return r.json()["id"]


def _judged_version(people):
    from webapp.rubrics.services import reward_spec_create

    return reward_spec_create(project=people.project, user=people.users["bob"], name="judged", definition=JUDGED)


def test_bad_launch_input_is_refused_naming_the_body_field(client, people, settings, tmp_path):
    run = _grpo_run(people, settings, tmp_path)
    prompts = _prompt_set(people, tmp_path)
    version = _judged_version(people)
    url = f"/api/v1/projects/{people.project.pk}/overoptimization/scoring-jobs"
    ok = {"run_id": run.pk, "steps": [5], "dataset_id": prompts.pk, "gold_kind": "human_win_rate"}
    cases = [
        ({**ok, "steps": [5, 9]}, "steps"),
        ({**ok, "steps": []}, "steps"),
        ({**ok, "dataset_id": prompts.pk + 99}, "dataset_id"),
        ({**ok, "gold_kind": "oracle"}, "gold_kind"),
        ({**ok, "gold_kind": "reward_model"}, "gold_spec_version_id"),
        ({**ok, "gold_kind": "lm_judge", "gold_spec_version_id": version.pk}, "gold_judge_id"),
        ({**ok, "gold_kind": "lm_judge", "gold_spec_version_id": version.pk, "gold_judge_id": 999999}, "gold_judge_id"),
        ({**ok, "round_id": 999999}, "round_id"),
        ({**ok, "params": {"max_new_tokens": 0}}, "params.max_new_tokens"),
        ({**ok, "params": {"output": "/tmp/x"}}, "params.output"),
    ]
    for body, field in cases:
        r = _api(client, people.users["bob"], "post", url, body)
        assert r.status_code == 422, (body, r.content)
        assert [e["field"] for e in r.json()["detail"]] == [field], (body, r.json())
    r = _api(client, people.users["bob"], "post", url, {**ok, "run_id": run.pk + 99})
    assert r.status_code == 422 and r.json()["detail"][0]["field"] == "run_id"
    assert _api(client, people.users["dave"], "post", url, ok).status_code == 403
    assert not Job.objects.filter(kind="overopt_score").exists()


def test_the_run_page_lists_checkpoints_refuses_on_the_field_and_launches(client, people, settings, tmp_path):
    run = _grpo_run(people, settings, tmp_path)
    prompts = _prompt_set(people, tmp_path)
    client.force_login(people.users["bob"])
    url = f"/projects/{people.project.pk}/rounds/runs/{run.pk}/overoptimization/"
    page = client.get(url).content.decode()
    assert 'name="steps" value="5"' in page and "checkpoint-5" in page and prompts.name in page
    refused = client.post(url, {"steps": ["5"], "dataset_id": prompts.pk, "gold_kind": "reward_model"})
    assert refused.status_code == 422
    assert 'data-field="gold_spec_version_id"' in refused.content.decode()
    assert not Job.objects.filter(kind="overopt_score").exists()
    launched = client.post(url, {"steps": ["5"], "dataset_id": prompts.pk, "gold_kind": "human_win_rate",
                                 "max_new_tokens": "4", "samples_per_prompt": "2", "name": "from the page"})
    job = Job.objects.get(kind="overopt_score")
    assert launched.status_code == 302 and launched["Location"] == f"/projects/{people.project.pk}/jobs/{job.pk}/"
    spec = json.loads((Path(job.output_dir) / "overopt_score.json").read_text())
    assert spec["max_new_tokens"] == 4 and spec["samples_per_prompt"] == 2 and spec["gold"]["kind"] == "human_win_rate"
    assert job.spec["name"] == "from the page" and job.queue == "gpu"


def test_an_lm_judge_gold_gets_the_stored_key_in_a_file_the_child_deletes(client, people, celery_workers, settings,
                                                                         tmp_path):
    run = _grpo_run(people, settings, tmp_path)
    prompts = _prompt_set(people, tmp_path, n=2)
    version = _judged_version(people)
    with ChatCompletionsServer(always("Score: 1"), api_key=SECRET) as server:
        judge_id = _judge(client, people, server.base_url)
        r = _api(client, people.users["bob"], "post",
                 f"/api/v1/projects/{people.project.pk}/overoptimization/scoring-jobs",
                 {"run_id": run.pk, "steps": [5], "dataset_id": prompts.pk, "gold_kind": "lm_judge",
                  "gold_spec_version_id": version.pk, "gold_judge_id": judge_id,
                  "params": {"max_new_tokens": 4, "seed": 1}})
        assert r.status_code == 201, r.content
        job = Job.objects.get(pk=r.json()["job_id"])
        folder = Path(job.output_dir)
        key_file = folder / "api-key"
        spec_text = (folder / "overopt_score.json").read_text()
        assert json.loads(spec_text)["gold"]["api_key_file"] == str(key_file)
        assert SECRET not in spec_text and SECRET not in json.dumps(job.spec) and SECRET not in " ".join(job.argv)
        if key_file.exists():  # the worker may already have read (and deleted) it
            assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
        wait_for(lambda: Job.objects.get(pk=job.pk).is_finished, 180, 0.3, f"job {job.pk} to finish")
        job.refresh_from_db()
        assert job.state == JobState.SUCCEEDED, f"{job.error}\n{job.log_tail[-2000:]}"
        assert server.stats.requests > 0 and server.stats.authorization_failures == 0
    assert not key_file.exists()
    report = OveroptimizationReport.objects.get(scoring_job=job)
    assert report.gold_kind == "lm_judge" and "judged v1" in report.gold_name and "gold (judge-1)" in report.gold_name
    assert all(s["gold"] is not None for s in report.samples)  # every sample judged: the key reached the server
    assert SECRET not in job.log_tail and SECRET not in json.dumps(report.samples)
