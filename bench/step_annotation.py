"""Step-labelling loop (issue 13): 8 annotators drive "next step item -> grade all its steps -> submit" over
the real HTTP API.

Starts uvicorn against PostgreSQL (bench/annotation_loop.py's helpers: database, port, CPU accounting,
percentiles), creates a project with 2,000 responses of 4 steps each (split with rlcore's ``step_header``
rule, overlap 3, so the queue does not run dry in 20 s), one step item per response, and 8 annotator
accounts; then 8 threads, each on its own keep-alive connection: POST .../annotation/steps/next, then
POST .../annotation/steps/labels with a grade for every step. Afterwards the database is checked: no step
item with more human step labels than its overlap, no annotator twice on one item. Prints one JSON line:
{"items_per_s": ..., "p50_ms": ..., "p99_ms": ..., "errors": ..., "over_assigned": ..., "repeat_assigned": ...}
Target (issue 13): >= 100 items/s, p99 < 150 ms per request, 0 over-assigned, 0 repeats.

usage: python bench/step_annotation.py [--seconds 20] [--annotators 8] [--items 2000] [--web-workers 2]
Needs PostgreSQL; uses its own database, reward_studio_bench_steps.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import annotation_loop as loop  # noqa: E402 - the pairwise bench's helpers, shared rather than copied

ROOT = loop.ROOT
# prepare_database and backend_pids read the module's DB_NAME: point them at this bench's own database.
loop.DB_NAME = "reward_studio_bench_steps"
N_STEPS = 4


def seed(n_items: int, n_annotators: int) -> tuple[int, list[str]]:
    """Project, dataset, responses split into steps by rlcore, step items and annotators; (project id, tokens)."""
    import django

    django.setup()
    from django.contrib.auth import get_user_model

    from rlcore.steps import StepSplit as StepRule
    from rlcore.steps import split_steps
    from webapp.accounts.services import api_token_create
    from webapp.annotation.services import step_items_build
    from webapp.datasets.models import Dataset, Prompt, Response, StepSplit
    from webapp.projects.models import Membership
    from webapp.projects.services import project_create

    User = get_user_model()
    owner = User.objects.create_user("bench-owner", password="bench-password")
    project = project_create(user=owner, name="Step bench")
    dataset = Dataset.objects.create(project=project, name="bench", source_format="jsonl", status="ready",
                                     created_by=owner, row_count=n_items)
    prompts = Prompt.objects.bulk_create([Prompt(dataset=dataset, source_line=i + 1, text=f"What is {i} * 4?")
                                          for i in range(n_items)])
    responses = Response.objects.bulk_create([
        Response(prompt=p, text="\n".join(f"Step {k + 1}: add {i} to get {i * (k + 1)}" for k in range(N_STEPS)))
        for i, p in enumerate(prompts)])
    rule = StepRule(kind="step_header")
    StepSplit.objects.bulk_create([
        StepSplit(response=r, version=1, rule=rule.model_dump(mode="json"),
                  steps=[{"text": s.text, "start": s.start, "end": s.end} for s in split_steps(r.text, rule)])
        for r in responses])
    step_items_build(project=project, dataset=dataset, overlap=3)
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
                       WHERE c.project_id = %s AND c.kind = 'steps' AND (SELECT count(*) FROM annotation_steplabel l
                             WHERE l.comparison_id = c.id AND l.source <> 'lm') > c.overlap""", [project_id])
        over = cur.fetchone()[0]
        cur.execute("""SELECT count(*) FROM (SELECT comparison_id, annotator_id FROM annotation_assignment
                       WHERE project_id = %s GROUP BY 1, 2 HAVING count(*) > 1) t""", [project_id])
        repeats = cur.fetchone()[0]
    return over, repeats


def annotator(port: int, project_id: int, token: str, stop_at: float, latencies: list[float], counts: dict,
              lock: threading.Lock) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    base = f"/api/v1/projects/{project_id}/annotation/steps"
    rng = random.Random(token)
    mine: dict[int, int] = {}
    local_lat, items, errors, repeats = [], 0, 0, 0

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
            if mine.setdefault(item["comparison_id"], item["assignment_id"]) != item["assignment_id"]:
                repeats += 1
            grades = [rng.choice([1, 1, 0, -1]) for _ in item["steps"]]  # every step of the item
            status, _ = call(base + "/labels", {"assignment_id": item["assignment_id"], "grades": grades})
            if status != 201:
                errors += 1
                continue
            items += 1
        except (OSError, http.client.HTTPException):
            errors += 1
            conn.close()
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    with lock:
        latencies.extend(local_lat)
        counts["items"] += items
        counts["errors"] += errors
        counts["repeats"] += repeats


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument("--annotators", type=int, default=8)
    parser.add_argument("--items", type=int, default=2000)
    parser.add_argument("--web-workers", type=int, default=2, help="uvicorn worker processes")
    args = parser.parse_args()

    env = {"SECRET_KEY": "bench-only-key", **os.environ,
           "DATABASE_URL": f"postgres://postgres@127.0.0.1:5432/{loop.DB_NAME}",
           "DJANGO_SETTINGS_MODULE": "webapp.settings", "LOG_LEVEL": "WARNING", "DATABASE_POOL_SIZE": "8"}
    loop.prepare_database(env)
    os.environ.update(env)
    project_id, tokens = seed(args.items, args.annotators)

    port = loop.free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "webapp.asgi:application", "--host", "127.0.0.1", "--port", str(port),
         "--no-access-log", "--log-level", "warning", "--workers", str(args.web_workers)],
        cwd=ROOT, env=env, start_new_session=True)
    try:
        deadline = time.time() + 60
        while True:
            try:
                if urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1).status == 200:
                    break
            except OSError:
                if time.time() > deadline:
                    raise SystemExit("uvicorn did not start")
                time.sleep(0.2)
        latencies: list[float] = []
        counts = {"items": 0, "errors": 0, "repeats": 0}
        lock = threading.Lock()
        warm_stop = time.time() + 1.5  # every worker process opens its database connection
        warm = [threading.Thread(target=annotator, args=(port, project_id, t, warm_stop, [], dict(counts), lock))
                for t in tokens]
        for t in warm:
            t.start()
        for t in warm:
            t.join()
        web, db = loop.web_pids(server.pid), loop.backend_pids()
        web_before, db_before = loop.cpu_seconds(web), loop.cpu_seconds(db)
        started = time.time()
        stop_at = started + args.seconds
        threads = [threading.Thread(target=annotator, args=(port, project_id, t, stop_at, latencies, counts, lock))
                   for t in tokens]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        elapsed = time.time() - started
        web_cpu, db_cpu = loop.cpu_seconds(web) - web_before, loop.cpu_seconds(db) - db_before
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)
    over, repeat_rows = audit(project_id)
    print(json.dumps({
        "items_per_s": round(counts["items"] / elapsed, 1),
        "steps_per_item": N_STEPS,
        "p50_ms": round(loop.percentile(latencies, 50), 1),
        "p99_ms": round(loop.percentile(latencies, 99), 1),
        "requests": len(latencies),
        "errors": counts["errors"],
        "over_assigned": over,
        "repeat_assigned": counts["repeats"] + repeat_rows,
        "web_cpu_ms_per_item": round(1000 * web_cpu / max(counts["items"], 1), 2),
        "db_cpu_ms_per_item": round(1000 * db_cpu / max(counts["items"], 1), 2),
        "load_avg_1m": round(os.getloadavg()[0], 1),
    }))


if __name__ == "__main__":
    main()
