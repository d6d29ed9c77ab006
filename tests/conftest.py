"""Test fixtures that start real parts: Celery workers and a uvicorn server as subprocesses,
talking to the PostgreSQL test database and Redis, exactly as in production.

bin/test sets DATABASE_URL (PostgreSQL), CELERY_BROKER_URL and REDIS_URL (Redis) before pytest
starts; pytest-django creates the test database, and the subprocesses are pointed at it.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "webapp.settings")
# Playwright's sync API runs an event loop in the test thread; the ORM calls in tests are still sync.
os.environ.setdefault("DJANGO_ALLOW_ASYNC_UNSAFE", "true")

ROOT = Path(__file__).resolve().parent.parent
PYTHON = sys.executable
PASSWORD = "correct-horse-battery"

# Short timings so lifecycle tests finish quickly; the mechanisms are the production ones.
FAST_JOB_TIMINGS = {
    "JOB_HEARTBEAT_TIMEOUT_SECONDS": "4",
    "JOB_REAPER_INTERVAL_SECONDS": "1",
    "JOB_KILL_GRACE_SECONDS": "3",
}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for(predicate, timeout: float, interval: float = 0.1, message: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = predicate()
        if result:
            return result
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {message}")


def _database_url() -> str:
    from django.conf import settings

    db = settings.DATABASES["default"]
    if db["ENGINE"] != "django.db.backends.postgresql":
        pytest.exit("The test suite runs against PostgreSQL: run it with bin/test (it sets DATABASE_URL).", 2)
    user = db.get("USER") or "postgres"
    password = f":{db['PASSWORD']}" if db.get("PASSWORD") else ""
    return f"postgres://{user}{password}@{db.get('HOST') or '127.0.0.1'}:{db.get('PORT') or 5432}/{db['NAME']}"


@pytest.fixture(scope="session")
def service_env(django_db_setup, django_db_blocker, tmp_path_factory):
    """Environment for subprocesses (workers, web server) that share the test database."""
    var_dir = tmp_path_factory.mktemp("var")
    from django.conf import settings

    env = {
        **os.environ,
        "DATABASE_URL": _database_url(),
        "REWARD_STUDIO_VAR": str(var_dir),
        "ARTIFACT_ROOT": str(settings.ARTIFACT_ROOT),
        "DATABASE_CONN_MAX_AGE": "0",
        "PYTHONUNBUFFERED": "1",
        **FAST_JOB_TIMINGS,
    }
    yield env
    # Subprocesses are stopped by now, but a killed one may leave its session open for a moment;
    # close them so pytest-django can drop the test database.
    from django.db import connection

    with django_db_blocker.unblock(), connection.cursor() as cursor:
        cursor.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                       "WHERE datname = current_database() AND pid <> pg_backend_pid()")


class Processes:
    """Subprocesses started by fixtures; each is stopped with its whole process group."""

    def __init__(self):
        self.procs: dict[str, subprocess.Popen] = {}

    def start(self, name: str, argv: list[str], env: dict[str, str], log_dir: Path) -> subprocess.Popen:
        log = open(log_dir / f"{name}.log", "w")
        proc = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        self.procs[name] = proc
        return proc

    def stop(self, name: str, sig=signal.SIGTERM, timeout: float = 10) -> None:
        proc = self.procs.pop(name, None)
        if proc is None or proc.poll() is not None:
            return
        try:
            os.killpg(proc.pid, sig)
            proc.wait(timeout=timeout)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            proc.wait(timeout=5)

    def stop_all(self) -> None:
        for name in list(self.procs):
            self.stop(name)


def worker_argv(queue: str, name: str, beat: bool = False) -> list[str]:
    pool = ["--pool=solo"] if queue == "gpu" else ["--pool=threads", "-c", "4"]
    return [PYTHON, "-m", "celery", "-A", "workers", "worker", "-Q", queue, *pool, "-n", f"{name}@%h",
            "--loglevel=INFO", "--without-mingle", "--without-gossip", *(["-B"] if beat else [])]


def _purge_broker(env: dict[str, str]) -> None:
    subprocess.run([PYTHON, "-m", "celery", "-A", "workers", "purge", "-f", "-Q", "default,gpu,maintenance"],
                   cwd=ROOT, env=env, check=False, capture_output=True, timeout=60)


def _worker_ready(log_path: Path) -> bool:
    return log_path.exists() and " ready." in log_path.read_text(errors="replace")


@pytest.fixture(scope="session")
def process_logs(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("logs")


# The workers' database sessions carry this name (libpq's PGAPPNAME), so a fault test can kill theirs only.
WORKER_APPLICATION_NAME = "reward-studio-test-worker"


@pytest.fixture(scope="session")
def celery_workers(service_env, process_logs):
    """A gpu worker (solo pool, as in production) and a default worker that also runs beat."""
    procs = Processes()
    _purge_broker(service_env)
    env = {**service_env, "PGAPPNAME": WORKER_APPLICATION_NAME}
    procs.start("worker-gpu", worker_argv("gpu", "gpu"), env, process_logs)
    # Here the default worker also serves `maintenance` (the reaper); bin/run gives that queue its own worker.
    procs.start("worker-default", worker_argv("default,maintenance", "default", beat=True), env, process_logs)
    for name in ("worker-gpu", "worker-default"):
        wait_for(lambda: _worker_ready(process_logs / f"{name}.log"), 90, 0.3, f"{name} to be ready")
    yield procs
    procs.stop_all()


@pytest.fixture
def restart_gpu_worker(celery_workers, service_env, process_logs):
    """Start a fresh gpu worker after a test that killed it."""
    yield
    if "worker-gpu" not in celery_workers.procs or celery_workers.procs["worker-gpu"].poll() is not None:
        celery_workers.procs.pop("worker-gpu", None)
        log = process_logs / "worker-gpu.log"
        log.write_text("")
        env = {**service_env, "PGAPPNAME": WORKER_APPLICATION_NAME}
        celery_workers.start("worker-gpu", worker_argv("gpu", "gpu"), env, process_logs)
        wait_for(lambda: _worker_ready(log), 90, 0.3, "worker-gpu to restart")


@pytest.fixture(scope="session")
def app_server(service_env, process_logs):
    """The ASGI application under uvicorn, as bin/run starts it. Yields its base URL."""
    import urllib.request

    port = free_port()
    procs = Processes()
    procs.start("uvicorn", [PYTHON, "-m", "uvicorn", "webapp.asgi:application", "--host", "127.0.0.1",
                            "--port", str(port), "--no-access-log"], service_env, process_logs)
    base = f"http://127.0.0.1:{port}"

    def up():
        try:
            return urllib.request.urlopen(base + "/healthz", timeout=1).status == 200
        except OSError:
            return False

    wait_for(up, 60, 0.2, "uvicorn to serve /healthz")
    yield base
    procs.stop_all()


# --- people -------------------------------------------------------------------------------

ROLES = ("owner", "designer", "annotator", "viewer")


@pytest.fixture
def people(django_user_model):
    """alice owns a project; bob designs, carol annotates, dave views; eve is not a member."""
    from webapp.projects.models import Membership
    from webapp.projects.services import project_create

    users = {name: django_user_model.objects.create_user(name, f"{name}@example.com", PASSWORD)
             for name in ("alice", "bob", "carol", "dave", "eve")}
    project = project_create(user=users["alice"], name="Helpfulness")
    for name, role in (("bob", "designer"), ("carol", "annotator"), ("dave", "viewer")):
        Membership.objects.create(project=project, user=users[name], role=role)
    other = project_create(user=users["eve"], name="Eve's secret project")
    users_by_role = {"owner": users["alice"], "designer": users["bob"], "annotator": users["carol"],
                     "viewer": users["dave"], "outsider": users["eve"]}
    return type("People", (), {"users": users, "project": project, "other_project": other, "by_role": users_by_role})


def sign_in(page, base: str, username: str, password: str = PASSWORD) -> None:
    """Sign in through the login page in a Playwright page; returns on the project list."""
    page.goto(base + "/accounts/login/")
    page.fill("#id_username", username)
    page.fill("#id_password", password)
    page.click("button[type=submit]")
    page.wait_for_url(base + "/")


def token_for(user) -> str:
    from webapp.accounts.services import api_token_create

    return api_token_create(user=user, name="tests")[1]


@pytest.fixture
def browser():
    """Headless Debian Chromium driven by Playwright (no browser download)."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        instance = pw.chromium.launch(
            executable_path=os.environ.get("CHROMIUM", "/usr/bin/chromium"), headless=True,
            args=["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"],
        )
        yield instance
        instance.close()
