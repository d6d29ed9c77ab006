"""Faults under real parts (issue 16): a database connection dropped under a running job, a Redis
restarted under running workers and an open dashboard, a worker killed mid-training."""

import pytest

from tests.conftest import wait_for
from webapp.jobs.models import Job, JobState, MetricPoint
from webapp.jobs.services import job_create

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.worker]


def _selfcheck(people, steps, interval, queue="default") -> Job:
    return job_create(project=people.project, user=people.users["alice"], kind="selfcheck", queue=queue,
                      argv=["selfcheck", "--steps", str(steps), "--interval", str(interval)])


def _loss_steps(job_id: int) -> list[int]:
    return list(MetricPoint.objects.filter(job_id=job_id, name="loss").order_by("pk").values_list("step", flat=True))


def _kill_other_database_connections() -> int:
    """Terminate every other session on the test database: the workers' included, as a restarted or
    failed-over server would."""
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE datname = current_database() "
                       "AND pid <> pg_backend_pid() AND backend_type = 'client backend'")
        return cursor.fetchone()[0]


def test_a_running_job_survives_its_database_connection_being_killed(celery_workers, people):
    job = _selfcheck(people, steps=30, interval=0.1)
    wait_for(lambda: len(_loss_steps(job.pk)) >= 4, 60, message="the job to write metrics")
    assert _kill_other_database_connections() >= 1
    wait_for(lambda: len(_loss_steps(job.pk)) >= 12, 30, message="the job to write metrics again")
    assert _kill_other_database_connections() >= 1
    wait_for(lambda: Job.objects.get(pk=job.pk).is_finished, 60, message="the job to finish")
    job.refresh_from_db()
    assert (job.state, job.error) == (JobState.SUCCEEDED, "")
    assert _loss_steps(job.pk) == list(range(1, 31))  # every point once, in order
