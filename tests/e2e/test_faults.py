"""Faults under real parts (issue 16): a database connection dropped under a running job, a Redis
restarted under running workers and an open dashboard, a worker killed mid-training."""

import subprocess
import time

import httpx
import pytest

from tests.conftest import (PYTHON, WORKER_APPLICATION_NAME, Processes, _worker_ready, free_port, token_for,
                            wait_for)
from webapp.jobs.models import Job, JobState, MetricPoint
from webapp.jobs.services import job_create

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.worker]


def _selfcheck(people, steps, interval, queue="default") -> Job:
    return job_create(project=people.project, user=people.users["alice"], kind="selfcheck", queue=queue,
                      argv=["selfcheck", "--steps", str(steps), "--interval", str(interval)])


def _loss_steps(job_id: int) -> list[int]:
    return list(MetricPoint.objects.filter(job_id=job_id, name="loss").order_by("pk").values_list("step", flat=True))


def _kill_worker_database_connections() -> int:
    """Terminate the workers' sessions on the test database, as a restarted or failed-over server would
    (only theirs: the test process and the web server share this database with other tests)."""
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE datname = current_database() "
                       "AND application_name = %s", [WORKER_APPLICATION_NAME])
        return cursor.fetchone()[0]


def test_a_running_job_survives_its_database_connection_being_killed(celery_workers, people):
    job = _selfcheck(people, steps=30, interval=0.1)
    wait_for(lambda: len(_loss_steps(job.pk)) >= 4, 60, message="the job to write metrics")
    assert _kill_worker_database_connections() >= 1
    wait_for(lambda: len(_loss_steps(job.pk)) >= 12, 30, message="the job to write metrics again")
    assert _kill_worker_database_connections() >= 1
    wait_for(lambda: Job.objects.get(pk=job.pk).is_finished, 60, message="the job to finish")
    job.refresh_from_db()
    assert (job.state, job.error) == (JobState.SUCCEEDED, "")
    assert _loss_steps(job.pk) == list(range(1, 31))  # every point once, in order


class OwnRedis:
    """A Redis server of this test's own (never the machine's shared one), restartable on its port.
    Like a production Redis without persistence, a restart loses every message it held."""

    def __init__(self, log_dir):
        self.port, self.log_dir, self.proc = free_port(), log_dir, None

    def url(self, db: int) -> str:
        return f"redis://127.0.0.1:{self.port}/{db}"

    def start(self) -> None:
        self.proc = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--daemonize", "no", "--dir", str(self.log_dir)],
            stdout=open(self.log_dir / "redis.log", "a"), stderr=subprocess.STDOUT)
        wait_for(self.ping, 10, 0.05, "own redis to answer")

    def ping(self) -> bool:
        import redis

        try:
            return redis.Redis(port=self.port, socket_timeout=0.5).ping()
        except redis.RedisError:
            return False

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=10)

    def restart(self, down_seconds: float) -> None:
        self.stop()
        time.sleep(down_seconds)
        self.start()


@pytest.fixture(scope="module")
def redis_stack(service_env, tmp_path_factory):
    """The production layout of bin/run on a Redis of our own: uvicorn, a default worker (threads), a
    gpu worker (solo) and the maintenance worker that runs beat and the reaper."""
    logs = tmp_path_factory.mktemp("faults")
    own = OwnRedis(logs)
    own.start()
    env = {**service_env, "CELERY_BROKER_URL": own.url(0), "REDIS_URL": own.url(1),
           "REWARD_STUDIO_VAR": str(tmp_path_factory.mktemp("faults-var")), "JOB_QUEUED_RESEND_SECONDS": "3"}
    procs = Processes()
    port = free_port()
    procs.start("uvicorn", [PYTHON, "-m", "uvicorn", "webapp.asgi:application", "--host", "127.0.0.1",
                            "--port", str(port), "--no-access-log"], env, logs)
    common = ["--loglevel=INFO", "--without-mingle", "--without-gossip"]
    workers = {
        "default": ["-Q", "default", "--pool=threads", "-c", "4"],
        "gpu": ["-Q", "gpu", "--pool=solo"],
        "maintenance": ["-Q", "maintenance", "--pool=threads", "-c", "2", "-B"],
    }
    for name, args in workers.items():
        procs.start(f"worker-{name}", [PYTHON, "-m", "celery", "-A", "workers", "worker", *args, "-n",
                                       f"{name}@%h", *common], env, logs)
    for name in workers:
        wait_for(lambda: _worker_ready(logs / f"worker-{name}.log"), 90, 0.3, f"worker-{name} to be ready")
    base = f"http://127.0.0.1:{port}"
    wait_for(lambda: _answers(base), 60, 0.2, "uvicorn to serve /healthz")
    yield type("Stack", (), {"redis": own, "base": base, "logs": logs, "procs": procs})
    procs.stop_all()
    own.stop()


def _answers(base: str) -> bool:
    try:
        return httpx.get(base + "/healthz", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


def _launch(client, people, **body) -> int:
    response = client.post(f"/api/v1/projects/{people.project.pk}/jobs/selfcheck", json=body)
    assert response.status_code == 201, response.text
    return response.json()["id"]


def _state(job_id: int) -> str:
    return Job.objects.get(pk=job_id).state


def test_workers_consume_again_after_a_redis_restart_and_lost_jobs_are_sent_again(redis_stack, people):
    headers = {"Authorization": f"Bearer {token_for(people.users['bob'])}"}
    with httpx.Client(base_url=redis_stack.base, headers=headers, timeout=30) as api:
        busy = _launch(api, people, steps=10_000, interval=0.1, queue="gpu")
        wait_for(lambda: _state(busy) == JobState.RUNNING, 60, message="the gpu worker to take a long job")
        behind = _launch(api, people, steps=2, interval=0, queue="gpu")  # waits in Redis behind it
        redis_stack.redis.restart(down_seconds=2)  # the waiting message is gone with it
        after = _launch(api, people, steps=2, interval=0)
        wait_for(lambda: _state(after) == JobState.SUCCEEDED, 30, 0.2, "a job launched after the restart to run")
        assert api.post(f"/api/v1/projects/{people.project.pk}/jobs/{busy}/cancel").status_code == 200
        wait_for(lambda: _state(busy) == JobState.CANCELLED, 30, 0.2, "the long job to be cancelled")
        wait_for(lambda: _state(behind) == JobState.SUCCEEDED, 40, 0.2,
                 "the job whose message was lost to be sent again and run")


def test_an_open_dashboard_gets_every_point_once_in_order_across_a_redis_restart(redis_stack, people):
    import threading

    from tests.e2e.test_live_dashboard import _read_events, _session_cookie

    headers = {"Authorization": f"Bearer {token_for(people.users['bob'])}"}
    with httpx.Client(base_url=redis_stack.base, headers=headers, timeout=30) as api:
        job_id = _launch(api, people, steps=120, interval=0.05)
    url = f"{redis_stack.base}/projects/{people.project.pk}/jobs/{job_id}/events/"
    events = []

    def restart_mid_run():
        wait_for(lambda: len(_loss_steps(job_id)) >= 20, 60, message="the job to be under way")
        redis_stack.redis.restart(down_seconds=1.5)  # points written meanwhile are published to nobody

    restarter = threading.Thread(target=restart_mid_run)
    with httpx.stream("GET", url, cookies=_session_cookie(people.users["dave"]), timeout=60) as response:
        assert response.status_code == 200
        restarter.start()
        events = _read_events(response, until="done", limit=100_000)
    restarter.join()
    assert _state(job_id) == JobState.SUCCEEDED
    stored = list(MetricPoint.objects.filter(job_id=job_id).order_by("pk").values_list("step", "name"))
    assert len(stored) == 240
    received = [(p["step"], p["name"]) for _, name, data in events if name == "metrics" for p in data]
    assert received == stored  # every point, exactly once, in the order written
    assert events[-1][1:] == ("done", {"state": "succeeded"})
