"""What the benchmarks that serve the app share: a fresh PostgreSQL database, uvicorn on a free port,
annotators driving a labelling queue over HTTP, CPU accounting, percentiles. Benchmarks import this;
nothing here is timed."""

from __future__ import annotations

import http.client
import json
import os
import random
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable
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


def annotator(port: int, token: str, *, queue: str, label: Callable[[dict, random.Random], dict], stop_at: float,
              latencies: list[float], counts: dict, lock: threading.Lock) -> None:
    """One annotator on its own keep-alive connection until ``stop_at`` or the queue runs dry: POST
    ``queue``/next, then POST ``queue``/labels with the assignment and ``label(item, rng)``. Adds its
    request latencies (ms) and its cycles, errors and repeats (another assignment of a comparison it had)
    to the shared ``latencies`` and ``counts``."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    rng = random.Random(token)
    mine: dict[int, int] = {}  # comparison -> assignment id
    local_lat, cycles, errors, repeats = [], 0, 0, 0

    def call(path: str, body: dict | None) -> tuple[int, bytes]:
        started = time.perf_counter()
        conn.request("POST", path, body=json.dumps(body or {}), headers=headers)
        response = conn.getresponse()
        data = response.read()
        local_lat.append((time.perf_counter() - started) * 1000)
        return response.status, data

    while time.time() < stop_at:
        try:
            status, data = call(queue + "/next", None)
            if status == 204:
                break
            if status != 200:
                errors += 1
                continue
            item = json.loads(data)
            # the same assignment again is a resume (after an error); another one is a repeat
            if mine.setdefault(item["comparison_id"], item["assignment_id"]) != item["assignment_id"]:
                repeats += 1
            status, _ = call(queue + "/labels", {"assignment_id": item["assignment_id"], **label(item, rng)})
            if status != 201:
                errors += 1
                continue
            cycles += 1
        except (OSError, http.client.HTTPException):
            errors += 1
            conn.close()
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    with lock:
        latencies.extend(local_lat)
        counts["cycles"] += cycles
        counts["errors"] += errors
        counts["repeats"] += repeats


def annotators_run(port: int, tokens: list[str], *, queue: str, label: Callable[[dict, random.Random], dict],
                   stop_at: float) -> tuple[dict, list[float]]:
    """One :func:`annotator` thread per token until ``stop_at``; their summed counts and all latencies."""
    latencies: list[float] = []
    counts = {"cycles": 0, "errors": 0, "repeats": 0}
    lock = threading.Lock()
    threads = [threading.Thread(target=annotator, args=(port, token), kwargs={
        "queue": queue, "label": label, "stop_at": stop_at, "latencies": latencies, "counts": counts,
        "lock": lock}) for token in tokens]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return counts, latencies


def backend_pids(db_name: str) -> list[int]:
    """PostgreSQL backends serving the database ``db_name`` (the web workers' pooled connections)."""
    from django.db import connection

    with connection.cursor() as cur:
        cur.execute("SELECT pid FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()", [db_name])
        return [row[0] for row in cur.fetchall()]


def cpu_seconds(pids: list[int]) -> float:
    import psutil

    total = 0.0
    for pid in pids:
        try:
            t = psutil.Process(pid).cpu_times()
            total += t.user + t.system
        except psutil.Error:
            pass
    return total


def web_pids(pid: int) -> list[int]:
    import psutil

    return [pid, *(c.pid for c in psutil.Process(pid).children(recursive=True))]
