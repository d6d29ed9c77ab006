"""A judge's API key file never outlives its job, however the job ends."""

import pytest

from webapp.jobs.models import Job, JobState
from webapp.jobs.services import job_finish, job_request_cancel
from webapp.judging.configs import KEY_FILE

pytestmark = pytest.mark.django_db


def _job_with_key_file(people, tmp_path, state):
    job = Job.objects.create(project=people.project, kind="judge_labels", created_by=people.users["alice"],
                             state=state, output_dir=str(tmp_path))
    (tmp_path / KEY_FILE).write_text("sk-secret")
    return job


def test_it_removes_the_key_file_of_a_job_cancelled_before_it_started(people, tmp_path):
    job = job_request_cancel(job=_job_with_key_file(people, tmp_path, JobState.QUEUED))
    assert job.state == JobState.CANCELLED
    assert not (tmp_path / KEY_FILE).exists()


@pytest.mark.parametrize("final", [JobState.FAILED, JobState.SUCCEEDED, JobState.CANCELLED])
def test_it_removes_the_key_file_whatever_state_a_running_job_ends_in(people, tmp_path, final):
    job = _job_with_key_file(people, tmp_path, JobState.RUNNING)
    assert job_finish(job_id=job.pk, state=final)
    assert not (tmp_path / KEY_FILE).exists()


def test_it_keeps_the_key_file_while_the_job_runs(people, tmp_path):
    job = _job_with_key_file(people, tmp_path, JobState.RUNNING)
    job_request_cancel(job=job)  # only flags a running job
    assert (tmp_path / KEY_FILE).exists()


def test_it_makes_a_job_succeeded_only_together_with_its_recorded_results(people, tmp_path):
    from webapp.jobs.services import job_succeeded

    job = Job.objects.create(project=people.project, kind="selfcheck", created_by=people.users["alice"],
                             state=JobState.RUNNING, output_dir=str(tmp_path))
    seen = []

    def record(sender, job, **kwargs):
        seen.append(Job.objects.get(pk=job.pk).state)  # the receiver runs inside the finishing transaction
        raise OSError("results file is unreadable")

    job_succeeded.connect(record, dispatch_uid="test.record")
    try:
        assert job_finish(job_id=job.pk, state=JobState.SUCCEEDED)
    finally:
        job_succeeded.disconnect(dispatch_uid="test.record")
    job.refresh_from_db()
    assert seen == [JobState.SUCCEEDED]
    assert job.state == JobState.FAILED
    assert job.error == "The job finished, but recording its results failed: results file is unreadable"
