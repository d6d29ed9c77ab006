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
import json
import os
import signal
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.harness import (  # noqa: E402
    annotators_run, backend_pids, cpu_seconds, fresh_database, percentile, start_web_server, web_pids)

DB_NAME = "reward_studio_bench_annotation"


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


def pairwise_label(item: dict, rng) -> dict:
    """A label for a pairwise item: a random choice and strength."""
    return {"choice": rng.choice(["A", "B", "tie"]), "strength": rng.choice([1, 2])}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument("--annotators", type=int, default=8)
    parser.add_argument("--comparisons", type=int, default=2000)
    parser.add_argument("--web-workers", type=int, default=2, help="uvicorn worker processes")
    args = parser.parse_args()

    env = {"SECRET_KEY": "bench-only-key", **os.environ, "DATABASE_URL": f"postgres://postgres@127.0.0.1:5432/{DB_NAME}",
           "DJANGO_SETTINGS_MODULE": "webapp.settings", "LOG_LEVEL": "WARNING", "DATABASE_POOL_SIZE": "8"}
    fresh_database(env)
    os.environ.update(env)
    project_id, tokens = seed(args.comparisons, args.annotators)

    server, port = start_web_server(env, workers=args.web_workers)
    try:
        queue = f"/api/v1/projects/{project_id}/annotation"
        # warm-up: every worker process opens its database connection
        annotators_run(port, tokens, queue=queue, label=pairwise_label, stop_at=time.time() + 1.5)
        web, db = web_pids(server.pid), backend_pids(DB_NAME)
        web_before, db_before = cpu_seconds(web), cpu_seconds(db)
        client_before = time.process_time()
        started = time.time()
        counts, latencies = annotators_run(port, tokens, queue=queue, label=pairwise_label,
                                           stop_at=started + args.seconds)
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
