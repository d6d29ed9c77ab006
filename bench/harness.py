"""What the benchmarks that serve the app share: a fresh PostgreSQL database, uvicorn on a free port,
percentiles. Benchmarks import this; nothing here is timed."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def fresh_database(env: dict[str, str]) -> None:
    """Drop and re-create the database ``env["DATABASE_URL"]`` names, then migrate it."""
    name = env["DATABASE_URL"].rsplit("/", 1)[1].split("?")[0]
    subprocess.run(["dropdb", "-h", "127.0.0.1", "-U", "postgres", "--if-exists", "--force", name], check=True,
                   env=env, stderr=subprocess.DEVNULL)
    subprocess.run(["createdb", "-h", "127.0.0.1", "-U", "postgres", name], check=True, env=env)
    subprocess.run([sys.executable, "manage.py", "migrate", "-v0"], cwd=ROOT, check=True, env=env)


def start_web_server(env: dict[str, str], *, workers: int = 1, cwd: Path = ROOT) -> tuple[subprocess.Popen, int]:
    """uvicorn serving the app on a free port, in its own process group, once /healthz answers."""
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "webapp.asgi:application", "--host", "127.0.0.1", "--port", str(port),
         "--no-access-log", "--log-level", "warning", "--workers", str(workers)],
        cwd=cwd, env=env, start_new_session=True)
    deadline = time.time() + 60
    while True:
        try:
            if urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1).status == 200:
                return server, port
        except OSError:
            if time.time() > deadline or server.poll() is not None:
                os.killpg(server.pid, signal.SIGTERM)
                raise SystemExit("uvicorn did not start")
            time.sleep(0.2)


def percentile(values: list[float], q: float) -> float:
    """The nearest-rank ``q``-th percentile (0 for no values)."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q / 100 * (len(ordered) - 1))))] if ordered else 0.0
