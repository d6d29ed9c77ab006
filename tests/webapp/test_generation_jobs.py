"""Generation jobs against a real worker: registered policies answer a prompt set, the answers enter the project
as a new dataset version with provenance; a re-run never duplicates; a cancel keeps what was generated."""

import json
import shutil
from pathlib import Path

import pytest
from django.core.exceptions import ValidationError

from rlcore.generation.spec import GenerationSettings
from rlcore.judges.testing_server import ChatCompletionsServer, always
from rlcore.training.tiny_models import build_tiny_causal_lm
from tests.conftest import wait_for
from webapp.datasets.models import Dataset, Response
from webapp.jobs.models import Job, JobState
from webapp.jobs.services import job_request_cancel
from webapp.training.services import generation_job_create, generation_rerun, policy_register

pytestmark = pytest.mark.django_db(transaction=True)


def _prompt_set(people, tmp_path, n):
    from webapp.datasets.services import dataset_create, dataset_import_run

    path = tmp_path / "prompts.jsonl"
    path.write_text("".join(json.dumps({"prompt": f"hello w{i} question"}) + "\n" for i in range(n)))
    dataset = dataset_create(project=people.project, user=people.users["bob"], name="held-out", path=path)
    return dataset_import_run(dataset_id=dataset.pk)


def _finished(job, timeout=120):
    wait_for(lambda: Job.objects.get(pk=job.pk).is_finished, timeout, 0.3, f"job {job.pk} to finish")
    job.refresh_from_db()
    return job


def test_a_local_policy_answers_into_a_new_dataset_version_and_a_rerun_adds_nothing(people, celery_workers, tmp_path):
    folder = build_tiny_causal_lm(tmp_path / "policy")
    policy = policy_register(project=people.project, user=people.users["bob"], source="folder",
                             location=str(folder), name="start")
    prompts = _prompt_set(people, tmp_path, 4)
    job = generation_job_create(project=people.project, user=people.users["bob"], dataset=prompts,
                                policies=[policy], settings=GenerationSettings(samples_per_prompt=2, max_new_tokens=6, seed=1),
                                round=1)
    assert job.queue == "gpu"
    job = _finished(job)
    assert job.state == JobState.SUCCEEDED, f"{job.error}\n{job.log_tail[-2000:]}"
    version = Dataset.objects.get(parent=prompts)
    assert (version.version, version.row_count, version.response_count, version.partial) == (2, 4, 8, False)
    responses = Response.objects.filter(prompt__dataset=version)
    assert {(r.policy_id, r.round, r.sampling["seed"], r.model_name) for r in responses} == {(policy.pk, 1, 1, "start")}
    assert sorted(r.sample_index for r in responses) == [0, 0, 0, 0, 1, 1, 1, 1]
    assert all(r.generated_at for r in responses) and job.progress_step == job.progress_total == 8

    again = _finished(generation_rerun(job=job, user=people.users["bob"]))
    assert again.state == JobState.SUCCEEDED, again.error
    assert Dataset.objects.filter(parent=prompts).count() == 1
    assert Response.objects.filter(prompt__dataset=version).count() == 8


def test_a_cancelled_endpoint_job_keeps_what_it_generated_marked_partial(people, celery_workers, tmp_path):
    with ChatCompletionsServer(always("an answer"), latency_s=0.4, capacity=1) as server:
        policy = policy_register(project=people.project, user=people.users["bob"], source="endpoint",
                                 location="served", endpoint_url=server.base_url, api_key="sk-test")
        prompts = _prompt_set(people, tmp_path, 30)
        job = generation_job_create(project=people.project, user=people.users["bob"], dataset=prompts,
                                    policies=[policy], settings=GenerationSettings(batch_size=1))
        assert job.queue == "default" and "sk-test" not in json.dumps(job.spec) + " ".join(job.argv)
        wait_for(lambda: Job.objects.get(pk=job.pk).progress_step >= 4, 60, 0.2, "some responses")
        job_request_cancel(job=Job.objects.get(pk=job.pk))
        job = _finished(job)
    assert job.state == JobState.CANCELLED
    version = Dataset.objects.get(parent=prompts)
    written = sum(1 for _ in open(f"{job.output_dir}/responses.jsonl"))
    assert version.partial and 4 <= version.response_count == written < 30
    assert not list(Path(job.output_dir).glob("policy-*.key"))  # the key file never outlives the job


def _subscribe(job_id):
    """The job's live channel (what re-renders the job page when it ends), subscribed before the job ends."""
    import redis
    from django.conf import settings

    from webapp.jobs import live

    subscription = redis.Redis.from_url(settings.REDIS_URL).pubsub(ignore_subscribe_messages=True)
    subscription.subscribe(live.channel_for(job_id))
    return subscription


def _check_when_final(subscription, check, timeout=120):
    """``check()`` the instant the final state is announced, before the worker does anything else."""
    import time

    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            message = subscription.get_message(timeout=1.0)
            if message and json.loads(message["data"]).get("state"):
                return check()
    finally:
        subscription.close()
    raise AssertionError("no final state was announced")


@pytest.mark.parametrize("end", ["cancelled", "succeeded"])
def test_a_finished_generation_job_has_its_version_the_moment_it_is_seen_finished(people, celery_workers,
                                                                                  tmp_path, end):
    # the version is recorded in the transaction that ends the job, so the page never says "No responses were
    # written" for a job that wrote some, and a test need not wait for the version after the job
    from webapp.training.selectors import generated_version

    latency, n = (0.3, 30) if end == "cancelled" else (0.0, 6)
    with ChatCompletionsServer(always("an answer"), latency_s=latency, capacity=1) as server:
        policy = policy_register(project=people.project, user=people.users["bob"], source="endpoint",
                                 location="served", endpoint_url=server.base_url)
        prompts = _prompt_set(people, tmp_path, n)
        job = generation_job_create(project=people.project, user=people.users["bob"], dataset=prompts,
                                    policies=[policy], settings=GenerationSettings(batch_size=1))
        subscription = _subscribe(job.pk)

        def seen():
            state = Job.objects.get(pk=job.pk).state
            version = generated_version(job=Job.objects.get(pk=job.pk))
            return state, version and (version.response_count, version.partial)

        if end == "cancelled":
            wait_for(lambda: Job.objects.get(pk=job.pk).progress_step >= 2, 60, 0.1, "some responses")
            job_request_cancel(job=Job.objects.get(pk=job.pk))
        state, recorded = _check_when_final(subscription, seen)
    assert state == end
    assert recorded is not None, "the job was seen finished before its dataset version existed"
    count, partial = recorded
    if end == "cancelled":
        assert partial and 2 <= count < n
    else:
        assert (count, partial) == (n, False)


def test_a_checkpoint_deleted_from_disk_is_refused_by_name(people, tmp_path):
    folder = build_tiny_causal_lm(tmp_path / "ck")
    policy = policy_register(project=people.project, user=people.users["bob"], source="folder",
                             location=str(folder), name="step 40")
    shutil.rmtree(folder)
    with pytest.raises(ValidationError) as refused:
        generation_job_create(project=people.project, user=people.users["bob"],
                              dataset=_prompt_set(people, tmp_path, 2), policies=[policy], settings=GenerationSettings())
    assert f"Policy 'step 40' is no longer on disk ({folder} is gone)" in str(refused.value)
    assert not Job.objects.filter(kind="generate").exists()
