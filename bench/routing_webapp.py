"""Routing in the webapp at scale: plan, approve, judge, record, against PostgreSQL.

Creates a project with N pairwise comparisons (default 5,000; 1,000 of them with both a human and an
LM label, so topk can fit its performance model), then times, through the services the pages and
the API call:
- `plan_uncertainty_s`: routing_plan_create(strategy="uncertainty", budget 25 %) on the pool;
- `plan_topk_s`: the same with topk (fits the performance model in the request);
- `approve_s`: routing_plan_approve (queue switch + pairs snapshot + job row);
- `judge_s` / `judge_pairs_per_s`: the job's own child command (`python -m rlcore judge pairwise`,
  run here without Celery) against a loopback server of known capacity;
- `record_s` / `record_labels_per_s`: lm_labels_record storing every label with its provenance.
Prints one JSON line.

usage: python bench/routing_webapp.py [--comparisons 5000] [--concurrency 16] [--latency 0.01]
Needs PostgreSQL (bin/test starts it); uses its own database, reward_studio_bench_routing_webapp.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.harness import fresh_database  # noqa: E402
DB_NAME = "reward_studio_bench_routing_webapp"
FIT_POOL = 1000


def seed(n: int):
    from django.contrib.auth import get_user_model

    from webapp.annotation.models import Comparison, PreferenceLabel
    from webapp.annotation.services import comparisons_build
    from webapp.datasets.models import Dataset, Prompt, Response
    from webapp.projects.services import project_create

    rng = random.Random(0)
    words = [f"word{i}" for i in range(2000)]
    user = get_user_model().objects.create_user("bench-owner", password="bench-password")
    project = project_create(user=user, name="Routing bench")
    dataset = Dataset.objects.create(project=project, name="bench", source_format="jsonl", status="ready",
                                     created_by=user, row_count=n)
    prompts = Prompt.objects.bulk_create([
        Prompt(dataset=dataset, source_line=i + 1, text=" ".join(rng.choices(words, k=rng.randint(8, 40))),
               metadata={"topic": rng.choice(["math", "code", "chat", "travel"])}) for i in range(n)])
    Response.objects.bulk_create([
        Response(prompt=p, text=" ".join(rng.choices(words, k=rng.randint(10, 250))) + (" thanks" if k else ""))
        for p in prompts for k in (0, 1)])
    comparisons_build(project=project, dataset=dataset, overlap=1)
    fit = list(Comparison.objects.filter(project=project).order_by("id")[:FIT_POOL])
    PreferenceLabel.objects.bulk_create(
        [PreferenceLabel(comparison=c, source="human", annotator=user, choice=rng.choice("ab"), strength=1)
         for c in fit]
        + [PreferenceLabel(comparison=c, source="lm", choice=rng.choice("ab"), strength=1, model_version="m",
                           provenance={"position_bias": rng.random() < 0.2, "confidence": rng.random()})
           for c in fit])
    Comparison.objects.filter(pk__in=[c.pk for c in fit]).update(human_label_count=1)
    return project, user


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--comparisons", type=int, default=5000)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--latency", type=float, default=0.01, help="seconds the loopback judge takes per request")
    args = parser.parse_args()

    env = {"SECRET_KEY": "bench-only-key", **os.environ, "DATABASE_URL": f"postgres://postgres@127.0.0.1:5432/{DB_NAME}",
           "ARTIFACT_ROOT": tempfile.mkdtemp(prefix="bench-routing-"), "OMP_NUM_THREADS": "1",
           "OPENBLAS_NUM_THREADS": "1", "CELERY_BROKER_URL": "memory://"}
    fresh_database(env)
    os.environ.update(env)
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "webapp.settings")
    import django

    django.setup()
    from django.db import connection

    from rlcore.judges.testing_server import ChatCompletionsServer, prefers_keyword
    from webapp.jobs.models import Job
    from webapp.judging.configs import judge_config_create
    from webapp.judging.lm_labels import lm_labels_record
    from webapp.routing.services import routing_plan_approve, routing_plan_create

    project, user = seed(args.comparisons)
    out: dict = {"comparisons": args.comparisons, "fit_pool": FIT_POOL}

    started = time.perf_counter()
    plan = routing_plan_create(project=project, user=user, budget="25%", strategy="uncertainty")
    out["plan_uncertainty_s"] = round(time.perf_counter() - started, 2)
    started = time.perf_counter()
    routing_plan_create(project=project, user=user, budget="25%", strategy="topk")
    out["plan_topk_s"] = round(time.perf_counter() - started, 2)
    out["pool"], out["n_lm"] = plan.n_total, plan.n_lm

    with ChatCompletionsServer(prefers_keyword("thanks"), latency_s=args.latency, capacity=args.concurrency,
                               keep_bodies=False) as server:
        config = judge_config_create(project=project, user=user, name="loopback", endpoint=server.base_url,
                                     model="bench-judge", max_concurrency=args.concurrency, timeout_s=30,
                                     api_key="sk-bench")
        started = time.perf_counter()
        # The job is enqueued on commit into a memory broker nobody reads: the child is run below instead.
        plan = routing_plan_approve(plan=plan, user=user, judge_config_id=config.pk)
        out["approve_s"] = round(time.perf_counter() - started, 2)
        job = Job.objects.get(pk=plan.job_id)
        started = time.perf_counter()
        subprocess.run([sys.executable, "-m", "rlcore", *job.argv], cwd=job.output_dir, env=env, check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        judge_s = time.perf_counter() - started
    out["judge_s"] = round(judge_s, 2)
    out["judge_pairs_per_s"] = round(plan.n_lm / judge_s, 1)
    out["server_ceiling_pairs_per_s"] = round(args.concurrency / args.latency / 2, 1)  # two requests per pair
    Job.objects.filter(pk=job.pk).update(state="succeeded")
    started = time.perf_counter()
    run = lm_labels_record(job=job)
    record_s = time.perf_counter() - started
    out["record_s"] = round(record_s, 2)
    out["record_labels_per_s"] = round(run.n_labelled / record_s, 1)
    out["labelled"], out["failed"] = run.n_labelled, run.n_failed
    connection.close()
    print(json.dumps(out))


if __name__ == "__main__":
    main()
