"""Jobs against real Celery workers, real HTTP (uvicorn) and PostgreSQL: success, failure,
cancel, a worker killed mid-job, and redelivery."""

import os
import signal

import httpx
import pytest

from tests.conftest import token_for, wait_for
from webapp.jobs.models import Job, JobState, MetricPoint

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.worker]


def _process_gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    # A zombie still answers kill(0); it has exited, its parent just has not reaped it.
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().split(")")[-1].split()[0] == "Z"
    except FileNotFoundError:
        return True


def _state(job_id: int) -> str:
    return Job.objects.get(pk=job_id).state


@pytest.fixture
def api(app_server, people):
    headers = {"Authorization": f"Bearer {token_for(people.users['bob'])}"}
    with httpx.Client(base_url=app_server, headers=headers, timeout=10) as client:
        yield client


def _launch(api, people, **body) -> int:
    response = api.post(f"/api/v1/projects/{people.project.pk}/jobs/selfcheck", json=body)
    assert response.status_code == 201, response.text
    assert response.json()["state"] == "queued"
    return response.json()["id"]


def test_it_runs_a_job_to_success_and_stores_its_metrics(celery_workers, api, people):
    job_id = _launch(api, people, steps=3, interval=0.05)
    wait_for(lambda: _state(job_id) == JobState.SUCCEEDED, 60, message="job to succeed")
    job = api.get(f"/api/v1/projects/{people.project.pk}/jobs/{job_id}").json()
    assert job["state"] == "succeeded" and job["progress_step"] == 3 and job["progress_total"] == 3
    assert job["worker"].startswith("default@") and job["started_at"] and job["finished_at"]
    metrics = api.get(f"/api/v1/projects/{people.project.pk}/jobs/{job_id}/metrics").json()
    losses = [(m["step"], m["value"]) for m in metrics if m["name"] == "loss"]
    assert losses == [(1, 1.0), (2, 0.5), (3, pytest.approx(1 / 3))]
    listed = api.get(f"/api/v1/projects/{people.project.pk}/jobs").json()
    assert [j["id"] for j in listed] == [job_id]


def test_it_fails_a_job_with_the_childs_error_text(celery_workers, api, people):
    job_id = _launch(api, people, steps=5, interval=0.05, fail_at=2)
    wait_for(lambda: _state(job_id) == JobState.FAILED, 60, message="job to fail")
    job = Job.objects.get(pk=job_id)
    assert "exited with code 3" in job.error
    assert "deliberate failure at step 2" in job.error
    assert MetricPoint.objects.filter(job=job, name="loss").count() == 1


def test_it_cancels_a_running_job_and_its_process_is_gone(celery_workers, api, people):
    job_id = _launch(api, people, steps=500, interval=0.1)
    wait_for(lambda: MetricPoint.objects.filter(job_id=job_id).count() >= 4, 60, message="metrics to stream in")
    pid = Job.objects.get(pk=job_id).pid
    assert pid and not _process_gone(pid)
    response = api.post(f"/api/v1/projects/{people.project.pk}/jobs/{job_id}/cancel")
    assert response.status_code == 200 and response.json()["cancel_requested"] is True
    # The worker polls every 0.5 s and the child exits on SIGTERM: well within 2 s, whatever the grace.
    wait_for(lambda: _state(job_id) == JobState.CANCELLED, 2.5, message="job to be cancelled within 2 s")
    assert _process_gone(pid)
    assert Job.objects.get(pk=job_id).progress_step < 500


def test_it_cancels_a_queued_job_at_once(celery_workers, api, people):
    # The gpu worker runs one job at a time; the second waits in the queue.
    first = _launch(api, people, steps=200, interval=0.1, queue="gpu")
    wait_for(lambda: _state(first) == JobState.RUNNING, 60, message="first job to start")
    second = _launch(api, people, steps=2, interval=0, queue="gpu")
    assert api.post(f"/api/v1/projects/{people.project.pk}/jobs/{second}/cancel").json()["state"] == "cancelled"
    api.post(f"/api/v1/projects/{people.project.pk}/jobs/{first}/cancel")
    wait_for(lambda: _state(first) == JobState.CANCELLED, 10, message="first job to be cancelled")
    # The cancelled job's message still reaches the worker, which must leave it alone.
    wait_for(lambda: celery_workers.procs["worker-gpu"].poll() is None, 1)
    assert _state(second) == JobState.CANCELLED and not MetricPoint.objects.filter(job_id=second).exists()


def test_it_reaps_a_job_whose_worker_was_killed(celery_workers, restart_gpu_worker, api, people):
    job_id = _launch(api, people, steps=1000, interval=0.1, queue="gpu")
    wait_for(lambda: MetricPoint.objects.filter(job_id=job_id).count() >= 2, 60, message="job to run")
    child_pid = Job.objects.get(pk=job_id).pid
    worker = celery_workers.procs["worker-gpu"]
    os.kill(worker.pid, signal.SIGKILL)
    worker.wait(timeout=10)
    wait_for(lambda: _state(job_id) == JobState.FAILED, 30, message="reaper to fail the job")
    assert "stopped sending heartbeats" in Job.objects.get(pk=job_id).error
    # The kernel told the orphaned child its worker died; it must not train on unobserved.
    wait_for(lambda: _process_gone(child_pid), 10, message="the orphaned child to exit")


def test_it_ignores_a_redelivered_message_for_a_finished_job(celery_workers, api, people):
    job_id = _launch(api, people, steps=2, interval=0)
    wait_for(lambda: _state(job_id) == JobState.SUCCEEDED, 60, message="job to succeed")
    before = Job.objects.get(pk=job_id)
    from workers.tasks import run_job

    run_job.apply_async(args=[job_id], queue="default")  # as the broker would redeliver it
    marker = _launch(api, people, steps=1, interval=0)  # runs after the redelivery on the same queue
    wait_for(lambda: _state(marker) == JobState.SUCCEEDED, 60, message="marker job to succeed")
    after = Job.objects.get(pk=job_id)
    assert (after.state, after.started_at, after.finished_at) == (before.state, before.started_at, before.finished_at)
    assert MetricPoint.objects.filter(job_id=job_id).count() == 4


def test_it_launches_from_the_page_and_lists_the_job(celery_workers, client, people):
    client.force_login(people.users["alice"])
    response = client.post(f"/projects/{people.project.pk}/jobs/", {"steps": 2, "interval": 0, "queue": "default"})
    assert response.status_code == 302
    job = Job.objects.get(project=people.project)
    wait_for(lambda: _state(job.pk) == JobState.SUCCEEDED, 60, message="page-launched job to succeed")
    listing = client.get(f"/projects/{people.project.pk}/jobs/").content.decode()
    assert f'id="job-{job.pk}"' in listing and "succeeded" in listing
    detail = client.get(f"/projects/{people.project.pk}/jobs/{job.pk}/").content.decode()
    assert "loss" in detail and "step 2 of 2" in detail


def test_it_stores_samples_whose_text_holds_nul_characters(celery_workers, people):
    # An untrained policy emits anything, including U+0000, which PostgreSQL cannot store as is.
    from webapp.jobs.services import job_record_events

    job = Job.objects.create(project=people.project, kind="selfcheck", created_by=people.users["alice"])
    job_record_events(job_id=job.pk, events=[
        {"kind": "sample", "step": 1, "completion": "ok\x00then", "rewards": {"a\x00": 1.0}},
        {"kind": "metric", "step": 1, "name": "loss\x00", "value": 1.0}])
    assert job.samples.get().data["completion"] == "ok\ufffdthen"
    assert MetricPoint.objects.get(job=job).name == "loss\ufffd"



def test_a_run_that_finishes_as_it_is_cancelled_succeeds(celery_workers, api, people):
    """The race of issue 10 (defect 9), caused for real: the cancel reaches the child during its last step.
    Like a training run, the child completes that step and exits 0, so the run finished: it must be
    succeeded, not cancelled (a cancelled finished run invited a resume to "step 31 of 30")."""
    job_id = _launch(api, people, steps=2, interval=2.0)
    wait_for(lambda: Job.objects.get(pk=job_id).progress_step == 1, 60, 0.05, message="the last step to start")
    assert api.post(f"/api/v1/projects/{people.project.pk}/jobs/{job_id}/cancel").json()["cancel_requested"] is True
    wait_for(lambda: Job.objects.get(pk=job_id).is_finished, 20, 0.1, message="the job to finish")
    job = Job.objects.get(pk=job_id)
    assert job.state == JobState.SUCCEEDED, f"{job.state}: {job.error}\n{job.log_tail}"
    assert "stop requested" in job.log_tail, "the cancel must have reached the running child"
    assert (job.progress_step, job.progress_total) == (2, 2)


def test_a_cancel_before_the_last_step_still_cancels(celery_workers, api, people):
    job_id = _launch(api, people, steps=3, interval=1.0)
    wait_for(lambda: Job.objects.get(pk=job_id).progress_step == 1, 60, 0.05, message="step 2 to start")
    api.post(f"/api/v1/projects/{people.project.pk}/jobs/{job_id}/cancel")
    wait_for(lambda: Job.objects.get(pk=job_id).is_finished, 20, 0.1, message="the job to finish")
    job = Job.objects.get(pk=job_id)
    assert job.state == JobState.CANCELLED and job.progress_step == 2  # it finished the step it was in
