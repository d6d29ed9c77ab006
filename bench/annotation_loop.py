"""Annotation loop: 8 annotators drive "next item -> submit label" over the real HTTP API.

Starts the application itself (uvicorn, the production ASGI server) against PostgreSQL, creates a
project with 2,000 pairwise comparisons (overlap 3, so the queue cannot run dry in 20 s) and 8
annotator accounts with API tokens, then runs 8 concurrent annotators for 20 s, each a thread
with its own keep-alive connection: POST .../annotation/next, then POST .../annotation/labels.
Afterwards it checks the database: no comparison above its overlap, no annotator twice on one
comparison. Prints one JSON line:
{"cycles_per_s": ..., "p50_ms": ..., "p99_ms": ..., "errors": ..., "over_assigned": ..., "repeat_assigned": ...}
Target on the 2-core machine: >= 150 cycles/s, p99 < 100 ms per request, 0 errors, 0 over, 0 repeats.

usage: python bench/annotation_loop.py [--seconds 20] [--annotators 8] [--comparisons 2000] [--web-workers 2]
Needs PostgreSQL (bin/test starts it); uses its own database, reward_studio_bench_annotation.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import random
import signal
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.harness import fresh_database, free_port, percentile, start_web_server  # noqa: E402,F401 (shared)

DB_NAME = "reward_studio_bench_annotation"


def prepare_database(env: dict[str, str]) -> None:
    fresh_database(env)


def seed(n_comparisons: int, n_annotators: int) -> tuple[int, list[str]]:
    """Project, dataset, comparisons and annotators, through the services; returns (project id, tokens)."""
    import django

    django.setup()
    from django.contrib.auth import get_user_model

    from webapp.accounts.services import api_token_create
    from webapp.annotation.services import comparisons_build
    from webapp.datasets.models import Dataset, Prompt, Response
    from webapp.projects.models import Membership
    from webapp.projects.services import project_create

    User = get_user_model()
    owner = User.objects.create_user("bench-owner", password="bench-password")
    project = project_create(user=owner, name="Annotation bench")
    dataset = Dataset.objects.create(project=project, name="bench", source_format="jsonl", status="ready",
                                     created_by=owner, row_count=n_comparisons)
    prompts = Prompt.objects.bulk_create([
        Prompt(dataset=dataset, source_line=i + 1, text=f"Prompt {i}: explain idea {i} in two sentences.")
        for i in range(n_comparisons)])
    Response.objects.bulk_create([Response(prompt=p, text=f"{kind} answer to {p.text} " * 4)
                                  for p in prompts for kind in ("A concise", "A rambling")])
    comparisons_build(project=project, dataset=dataset, overlap=3)
    tokens = []
    for i in range(n_annotators):
        user = User.objects.create_user(f"annotator{i}", password="bench-password")
        Membership.objects.create(project=project, user=user, role="annotator")
        tokens.append(api_token_create(user=user, name="bench")[1])
    return project.pk, tokens


def audit(project_id: int) -> tuple[int, int]:
    from django.db import connection

    with connection.cursor() as cur:
        cur.execute("""SELECT count(*) FROM annotation_comparison c
                       WHERE c.project_id = %s AND (SELECT count(*) FROM annotation_preferencelabel l
                             WHERE l.comparison_id = c.id AND l.source = 'human') > c.overlap""", [project_id])
        over = cur.fetchone()[0]
        cur.execute("""SELECT count(*) FROM (SELECT comparison_id, annotator_id FROM annotation_assignment
                       WHERE project_id = %s GROUP BY 1, 2 HAVING count(*) > 1) t""", [project_id])
        repeats = cur.fetchone()[0]
        cur.execute("""SELECT count(*) FROM (SELECT comparison_id, annotator_id FROM annotation_preferencelabel
                       l JOIN annotation_comparison c ON c.id = l.comparison_id WHERE c.project_id = %s
                       AND l.source = 'human' GROUP BY 1, 2 HAVING count(*) > 1) t""", [project_id])
        repeats += cur.fetchone()[0]
    return over, repeats


def annotator(port: int, project_id: int, token: str, stop_at: float, latencies: list[float], counts: dict,
              lock: threading.Lock) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    base = f"/api/v1/projects/{project_id}/annotation"
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
            status, data = call(base + "/next", None)
            if status == 204:
                break
            if status != 200:
                errors += 1
                continue
            item = json.loads(data)
            # the same assignment again is a resume (after an error); another one is a repeat
            if mine.setdefault(item["comparison_id"], item["assignment_id"]) != item["assignment_id"]:
                repeats += 1
            status, _ = call(base + "/labels", {"assignment_id": item["assignment_id"],
                                                "choice": rng.choice(["A", "B", "tie"]), "strength": rng.choice([1, 2])})
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


def backend_pids() -> list[int]:
    """PostgreSQL backends serving the bench database (the web workers' pooled connections)."""
    from django.db import connection

    with connection.cursor() as cur:
        cur.execute("SELECT pid FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()", [DB_NAME])
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


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument("--annotators", type=int, default=8)
    parser.add_argument("--comparisons", type=int, default=2000)
    parser.add_argument("--web-workers", type=int, default=2, help="uvicorn worker processes")
    args = parser.parse_args()

    env = {"SECRET_KEY": "bench-only-key", **os.environ, "DATABASE_URL": f"postgres://postgres@127.0.0.1:5432/{DB_NAME}",
           "DJANGO_SETTINGS_MODULE": "webapp.settings", "LOG_LEVEL": "WARNING", "DATABASE_POOL_SIZE": "8"}
    prepare_database(env)
    os.environ.update(env)
    project_id, tokens = seed(args.comparisons, args.annotators)

    server, port = start_web_server(env, workers=args.web_workers)
    try:
        latencies: list[float] = []
        counts = {"cycles": 0, "errors": 0, "repeats": 0}
        lock = threading.Lock()
        # warm-up: every worker process opens its database connection
        warm_stop = time.time() + 1.5
        warm = [threading.Thread(target=annotator, args=(port, project_id, t, warm_stop, [], dict(counts), lock))
                for t in tokens]
        for t in warm:
            t.start()
        for t in warm:
            t.join()
        web, db = web_pids(server.pid), backend_pids()
        web_before, db_before = cpu_seconds(web), cpu_seconds(db)
        client_before = time.process_time()
        started = time.time()
        stop_at = started + args.seconds
        threads = [threading.Thread(target=annotator, args=(port, project_id, t, stop_at, latencies, counts, lock))
                   for t in tokens]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        elapsed = time.time() - started
        web_cpu, db_cpu = cpu_seconds(web) - web_before, cpu_seconds(db) - db_before
        client_cpu = time.process_time() - client_before
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)
    over, repeat_rows = audit(project_id)
    print(json.dumps({
        "cycles_per_s": round(counts["cycles"] / elapsed, 1),
        "p50_ms": round(percentile(latencies, 50), 1),
        "p99_ms": round(percentile(latencies, 99), 1),
        "errors": counts["errors"],
        "over_assigned": over,
        "repeat_assigned": counts["repeats"] + repeat_rows,
        # CPU spent per cycle by the web workers and by their PostgreSQL backends: what bounds
        # cycles/s when the machine is shared (see load_avg_1m)
        "web_cpu_ms_per_cycle": round(1000 * web_cpu / max(counts["cycles"], 1), 2),
        "db_cpu_ms_per_cycle": round(1000 * db_cpu / max(counts["cycles"], 1), 2),
        "client_cpu_ms_per_cycle": round(1000 * client_cpu / max(counts["cycles"], 1), 2),
        "load_avg_1m": round(os.getloadavg()[0], 1),
    }))


if __name__ == "__main__":
    main()
