"""Step-labelling loop (issue 13): 8 annotators drive "next step item -> grade all its steps -> submit" over
the real HTTP API.

Starts uvicorn against PostgreSQL (bench/harness.py: database, server, the annotators' client, CPU
accounting, percentiles), creates a project with 2,000 responses of 4 steps each (split with rlcore's ``step_header``
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

DB_NAME = "reward_studio_bench_steps"
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


def step_label(item: dict, rng) -> dict:
    """A step label: a random grade for every step of the item."""
    return {"grades": [rng.choice([1, 1, 0, -1]) for _ in item["steps"]]}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument("--annotators", type=int, default=8)
    parser.add_argument("--items", type=int, default=2000)
    parser.add_argument("--web-workers", type=int, default=2, help="uvicorn worker processes")
    args = parser.parse_args()

    env = {"SECRET_KEY": "bench-only-key", **os.environ,
           "DATABASE_URL": f"postgres://postgres@127.0.0.1:5432/{DB_NAME}",
           "DJANGO_SETTINGS_MODULE": "webapp.settings", "LOG_LEVEL": "WARNING", "DATABASE_POOL_SIZE": "8"}
    fresh_database(env)
    os.environ.update(env)
    project_id, tokens = seed(args.items, args.annotators)

    server, port = start_web_server(env, workers=args.web_workers)
    try:
        queue = f"/api/v1/projects/{project_id}/annotation/steps"
        # warm-up: every worker process opens its database connection
        annotators_run(port, tokens, queue=queue, label=step_label, stop_at=time.time() + 1.5)
        web, db = web_pids(server.pid), backend_pids(DB_NAME)
        web_before, db_before = cpu_seconds(web), cpu_seconds(db)
        started = time.time()
        counts, latencies = annotators_run(port, tokens, queue=queue, label=step_label,
                                           stop_at=started + args.seconds)
        elapsed = time.time() - started
        web_cpu, db_cpu = cpu_seconds(web) - web_before, cpu_seconds(db) - db_before
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)
    over, repeat_rows = audit(project_id)
    print(json.dumps({
        "items_per_s": round(counts["cycles"] / elapsed, 1),
        "steps_per_item": N_STEPS,
        "p50_ms": round(percentile(latencies, 50), 1),
        "p99_ms": round(percentile(latencies, 99), 1),
        "requests": len(latencies),
        "errors": counts["errors"],
        "over_assigned": over,
        "repeat_assigned": counts["repeats"] + repeat_rows,
        "web_cpu_ms_per_item": round(1000 * web_cpu / max(counts["cycles"], 1), 2),
        "db_cpu_ms_per_item": round(1000 * db_cpu / max(counts["cycles"], 1), 2),
        "load_avg_1m": round(os.getloadavg()[0], 1),
    }))


if __name__ == "__main__":
    main()
