"""Scale: one project with 10k, 100k and 1M comparisons on PostgreSQL, through the real HTTP server.

For each size it seeds a fresh database in SQL (INSERT ... SELECT generate_series: prompts, two
responses each, one pairwise comparison per prompt at overlap 3, and on every other comparison one
human label from one of four seed raters plus one LM label, so labels = comparisons), starts uvicorn
and measures, each with the web workers' peak RSS during that operation (VmHWM, reset through
/proc/<pid>/clear_refs before it):
- `queue`: 8 annotators driving next -> label for `--seconds` (bench/harness.py's client):
  p50/p99 per request, cycles/s, errors;
- `agreement_api`, `agreement_page`: GET .../agreement (API) and the agreement page;
- `export`: GET .../export?format=jsonl, read as a stream (bytes, rows);
- `routing_plan`: POST .../routing/plans (uncertainty, budget 25 %) on the unlabelled pool; above
  ROUTING_INLINE_POOL that answers 202 and `routing_job` runs the planning job here, as a worker would
  (workers.runner.execute_job): seconds, the child's peak RSS and this process's growth while recording.
Prints one JSON object: {"sizes": {"10000": {...}, ...}, "targets": {...}}.
Targets: queue p99 at the largest size within 1.5x of the smallest; export and agreement peak RSS
flat (streamed), time at most linear in labels.

usage: python bench/scale.py [--sizes 10000,100000,1000000] [--seconds 15] [--web-workers 2]
Needs PostgreSQL (bin/test starts it); uses its own database (--db, default reward_studio_bench_scale:
give each concurrent run its own name, the database is dropped and recreated per size).
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.annotation_loop import audit, pairwise_label  # noqa: E402
from bench.harness import annotators_run, percentile, start_web_server, web_pids  # noqa: E402

DB_NAME = "reward_studio_bench_scale"  # --db overrides it
SEED_RATERS = 4


def prepare_database(env: dict[str, str]) -> None:
    from django.db import connection

    connection.close()
    subprocess.run(["dropdb", "-h", "127.0.0.1", "-U", "postgres", "--if-exists", "--force", DB_NAME], check=True,
                   env=env, stderr=subprocess.DEVNULL)
    subprocess.run(["createdb", "-h", "127.0.0.1", "-U", "postgres", DB_NAME], check=True, env=env)
    subprocess.run([sys.executable, "manage.py", "migrate", "-v0"], cwd=ROOT, check=True, env=env)


SEED_SQL = [
    # prompts 1..n
    """INSERT INTO datasets_prompt (dataset_id, source_line, text, metadata)
       SELECT %(dataset)s, i, 'Prompt ' || i || ': explain idea ' || i || ' in two sentences.',
              jsonb_build_object('topic', (ARRAY['math','code','chat','travel'])[1 + i %% 4])
         FROM generate_series(1, %(n)s) i""",
    # two responses per prompt
    """INSERT INTO datasets_response (prompt_id, text, model_name, metadata)
       SELECT p.id, repeat(k.kind || ' answer to ' || p.text || ' ', 2 + (p.id %% 3)::int), '', '{}'::jsonb
         FROM datasets_prompt p CROSS JOIN (VALUES ('A concise'), ('A rambling')) k(kind)
        WHERE p.dataset_id = %(dataset)s ORDER BY p.id""",
    # one pairwise comparison per prompt
    """INSERT INTO annotation_comparison (project_id, prompt_id, kind, response_ids, overlap, taken,
                                          human_label_count, is_active, created_at)
       SELECT %(project)s, r.prompt_id, 'pair', jsonb_build_array(min(r.id), max(r.id)), 3, 0, 0, true, now()
         FROM datasets_response r JOIN datasets_prompt p ON p.id = r.prompt_id
        WHERE p.dataset_id = %(dataset)s GROUP BY r.prompt_id ORDER BY r.prompt_id""",
    # every other comparison: a human label by a seed rater and an LM label agreeing 70 % of the time
    """WITH picked AS (
           SELECT c.id, c.response_ids, (ARRAY['a','b','tie'])[1 + floor(random() * 3)::int] AS human,
                  row_number() OVER (ORDER BY c.id) AS k
             FROM annotation_comparison c WHERE c.project_id = %(project)s AND c.id %% 2 = 1)
       INSERT INTO annotation_preferencelabel (comparison_id, source, annotator_id, choice, strength,
                                               criterion_scores, rationale, display_order, model_version,
                                               provenance, created_at)
       SELECT id, 'human', (%(raters)s)[1 + k %% %(n_raters)s], human, CASE WHEN human = 'tie' THEN 0 ELSE 1 END,
              '{}'::jsonb, '', response_ids, '', '{}'::jsonb, now() FROM picked
       UNION ALL
       SELECT id, 'lm', NULL, lm, CASE WHEN lm = 'tie' THEN 0 ELSE 1 END, '{}'::jsonb, '', response_ids,
              'bench-judge', jsonb_build_object('confidence', random(), 'position_bias', random() < 0.2), now()
         FROM (SELECT id, response_ids, CASE WHEN random() < 0.7 THEN human
                      ELSE (ARRAY['a','b','tie'])[1 + floor(random() * 3)::int] END AS lm FROM picked) t""",
    """UPDATE annotation_comparison SET taken = 1, human_label_count = 1
        WHERE project_id = %(project)s AND id %% 2 = 1""",
]


def database_defaults(tables: list[str], *, on: bool) -> None:
    """Give (or take back) every column that has a Django default that default in the database too, so the
    SQL seed need not list fields added later (Django applies defaults in Python, not in the table)."""
    from django.apps import apps
    from django.db import connection

    with connection.cursor() as cur:
        for model in apps.get_models():
            if model._meta.db_table not in tables:
                continue
            for field in model._meta.concrete_fields:
                # A text column without a default still gets "" from Django (get_default), so the seed needs it too.
                if field.primary_key or not (field.has_default() or (field.empty_strings_allowed and not field.null)):
                    continue
                column = f"{connection.ops.quote_name(model._meta.db_table)} ALTER COLUMN " \
                         f"{connection.ops.quote_name(field.column)}"
                if on:
                    cur.execute(f"ALTER TABLE {column} SET DEFAULT %s",
                                [field.get_db_prep_save(field.get_default(), connection=connection)])
                else:
                    cur.execute(f"ALTER TABLE {column} DROP DEFAULT")


SEED_TABLES = ["datasets_prompt", "datasets_response", "annotation_comparison", "annotation_preferencelabel"]


def seed(n: int, n_annotators: int) -> dict:
    """Accounts through the services, the bulk through SQL; returns ids, tokens and a session key."""
    from django.contrib.auth import BACKEND_SESSION_KEY, HASH_SESSION_KEY, SESSION_KEY, get_user_model
    from django.contrib.sessions.backends.db import SessionStore
    from django.db import connection, transaction

    from webapp.accounts.services import api_token_create
    from webapp.datasets.models import Dataset
    from webapp.projects.models import Membership
    from webapp.projects.services import project_create

    User = get_user_model()
    owner = User.objects.create_user("bench-owner", password="bench-password")
    project = project_create(user=owner, name="Scale bench")
    dataset = Dataset.objects.create(project=project, name="bench", source_format="jsonl", status="ready",
                                     created_by=owner, row_count=n, response_count=2 * n)
    raters = []
    for i in range(SEED_RATERS):
        rater = User.objects.create_user(f"seed-rater{i}", password="bench-password")
        Membership.objects.create(project=project, user=rater, role="annotator")
        raters.append(rater.pk)
    tokens = []
    for i in range(n_annotators):
        user = User.objects.create_user(f"annotator{i}", password="bench-password")
        Membership.objects.create(project=project, user=user, role="annotator")
        tokens.append(api_token_create(user=user, name="bench")[1])
    started = time.perf_counter()
    database_defaults(SEED_TABLES, on=True)
    with transaction.atomic(), connection.cursor() as cur:
        for sql in SEED_SQL:
            cur.execute(sql, {"n": n, "dataset": dataset.pk, "project": project.pk, "raters": raters,
                              "n_raters": len(raters)})
    database_defaults(SEED_TABLES, on=False)
    with connection.cursor() as cur:
        cur.execute("ANALYZE")  # what autovacuum would do after a bulk load
        cur.execute("SELECT count(*) FROM annotation_preferencelabel")
        n_labels = cur.fetchone()[0]
    seconds = time.perf_counter() - started
    session = SessionStore()
    session[SESSION_KEY] = str(owner.pk)
    session[BACKEND_SESSION_KEY] = "django.contrib.auth.backends.ModelBackend"
    session[HASH_SESSION_KEY] = owner.get_session_auth_hash()
    session.create()
    return {"project": project.pk, "tokens": tokens, "owner_token": api_token_create(user=owner, name="bench")[1],
            "session": session.session_key, "labels": n_labels, "seed_s": round(seconds, 1)}


# ------------------------------------------------------------------ server memory


def _status_kb(pid: int, field: str) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def measured(pids: list[int], fn) -> dict:
    """Run fn, timing it and watching the web processes' memory: each one's peak RSS (VmHWM) is reset
    to its current RSS first (Linux: clear_refs 5), so the growth is what this operation added."""
    before = {pid: _status_kb(pid, "VmRSS") for pid in pids}
    for pid in pids:
        try:
            Path(f"/proc/{pid}/clear_refs").write_text("5")
        except OSError:
            pass
    started = time.perf_counter()
    try:
        out = fn()
    except (OSError, http.client.HTTPException) as exc:  # e.g. the worker died: record it, measure the rest
        out = {"error": repr(exc)}
    seconds = time.perf_counter() - started
    peaks = {pid: _status_kb(pid, "VmHWM") for pid in pids}
    return {"seconds": round(seconds, 2), "server_peak_rss_mb": round(max(peaks.values()) / 1024, 1),
            "server_peak_growth_mb": round(max(peaks[p] - before[p] for p in pids) / 1024, 1), **out}


# ------------------------------------------------------------------ operations


def run_queue(port: int, project_id: int, tokens: list[str], seconds: float) -> dict:
    queue = f"/api/v1/projects/{project_id}/annotation"
    annotators_run(port, tokens, queue=queue, label=pairwise_label, stop_at=time.time() + 1.5)  # warm-up
    started = time.time()
    counts, latencies = annotators_run(port, tokens, queue=queue, label=pairwise_label, stop_at=started + seconds)
    elapsed = time.time() - started
    return {"cycles_per_s": round(counts["cycles"] / elapsed, 1), "p50_ms": round(percentile(latencies, 50), 1),
            "p99_ms": round(percentile(latencies, 99), 1), "errors": counts["errors"],
            "repeats": counts["repeats"]}


def http_get(port: int, path: str, headers: dict, method: str = "GET", body: bytes | None = None,
             timeout: float = 1800, keep: int = 2000) -> tuple[dict, bytes]:
    """Read the answer as a stream (64 KiB at a time): bytes and lines, never the whole body in memory."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    conn.request(method, path, body=body, headers=headers)
    response = conn.getresponse()
    size = lines = 0
    first = b""
    while chunk := response.read(65536):
        size += len(chunk)
        lines += chunk.count(b"\n")
        if len(first) < keep:
            first += chunk[:keep - len(first)]
    conn.close()
    out = {"status": response.status, "bytes": size, "lines": lines}
    if response.status >= 400:
        out["error"] = first[:500].decode(errors="replace")
    for header in ("X-Labels-In", "X-Rows-Out"):
        if response.getheader(header):
            out[header.lower().replace("-", "_")] = int(response.getheader(header))
    return out, first


def _child_peaks(marker: str, peaks: dict, stop: threading.Event) -> None:
    """Watch for processes whose command line holds ``marker`` and keep each one's peak RSS (VmHWM)."""
    while not stop.is_set():
        for proc in Path("/proc").iterdir():
            if not proc.name.isdigit():
                continue
            try:
                if marker in (proc / "cmdline").read_bytes().decode(errors="replace"):
                    peaks[proc.name] = max(peaks.get(proc.name, 0), _status_kb(int(proc.name), "VmHWM"))
            except OSError:
                continue
        stop.wait(0.2)


def run_planning_job(job_id: int, plan_id: int) -> dict:
    """Run a planning job as a worker does; this process plays the worker (it records the plan)."""
    from workers.runner import execute_job

    from webapp.jobs.models import Job
    from webapp.routing.models import RoutingPlan

    me = os.getpid()
    before = _status_kb(me, "VmRSS")
    Path(f"/proc/{me}/clear_refs").write_text("5")
    peaks: dict = {}
    stop = threading.Event()
    watcher = threading.Thread(target=_child_peaks, args=("routing\x00plan", peaks, stop), daemon=True)
    watcher.start()
    started = time.perf_counter()
    execute_job(job_id, worker="bench")
    seconds = time.perf_counter() - started
    stop.set()
    watcher.join()
    job, plan = Job.objects.get(pk=job_id), RoutingPlan.objects.get(pk=plan_id)
    return {"seconds": round(seconds, 2), "state": job.state, "plan_status": plan.status, "error": job.error[-300:],
            "n_human": plan.n_human, "n_lm": plan.n_lm, "decisions": plan.decisions.count(),
            "child_peak_rss_mb": round(max(peaks.values(), default=0) / 1024, 1),
            "worker_peak_growth_mb": round((_status_kb(me, "VmHWM") - before) / 1024, 1)}


def other_operations(port: int, base: str, api: dict, pids: list[int], project_id: int, seeded: dict, args) -> dict:
    """The annotation queue, agreement (API and page) and the export, each measured."""
    result = {"queue": measured(pids, lambda: run_queue(port, project_id, seeded["tokens"], args.seconds))}
    over, repeats = audit(project_id)
    result["queue"].update(over_assigned=over, repeat_rows=repeats)

    def agreement_api():
        out, first = http_get(port, base + "/agreement", api, keep=1 << 24)
        if out["status"] == 200:
            body = json.loads(first) if out["bytes"] <= len(first) else {}
            out.update(n_labels=body.get("n_labels"), alpha=body.get("overall", {}).get("krippendorff_alpha"))
        return out

    result["agreement_api"] = measured(pids, agreement_api)
    result["agreement_page"] = measured(pids, lambda: http_get(
        port, f"/projects/{project_id}/agreement/", {"Cookie": f"sessionid={seeded['session']}"})[0])
    result["export"] = measured(pids, lambda: http_get(port, base + "/export?format=jsonl", api)[0])
    return result


def run_size(n: int, args, env: dict[str, str]) -> dict:
    prepare_database(env)
    seeded = seed(n, args.annotators)
    project_id = seeded["project"]
    result: dict = {"comparisons": n, "labels_seeded": seeded["labels"], "seed_s": seeded["seed_s"]}
    server, port = start_web_server(env, workers=args.web_workers)
    try:
        pids = web_pids(server.pid)
        api = {"Authorization": f"Bearer {seeded['owner_token']}"}
        base = f"/api/v1/projects/{project_id}"
        if not args.routing_only:
            result.update(other_operations(port, base, api, pids, project_id, seeded, args))

        if not args.skip_routing:
            answer: dict = {}

            def plan_request():
                out, first = http_get(port, base + "/routing/plans", {**api, "Content-Type": "application/json"},
                                      method="POST", body=json.dumps({"budget": "25%", "strategy": "uncertainty"})
                                      .encode(), keep=1 << 16)
                if out["status"] == 202:
                    answer.update(json.loads(first))
                return out

            result["routing_plan"] = measured(pids, plan_request)
            if answer.get("planning_job_id"):
                result["routing_job"] = run_planning_job(answer["planning_job_id"], answer["id"])
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=60)
    result["load_avg_1m"] = round(os.getloadavg()[0], 1)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="10000,100000,1000000", help="comparisons per run, comma-separated")
    parser.add_argument("--seconds", type=float, default=15, help="queue run per size")
    parser.add_argument("--annotators", type=int, default=8)
    parser.add_argument("--web-workers", type=int, default=2, help="uvicorn worker processes")
    parser.add_argument("--skip-routing", action="store_true", help="leave the routing plan out")
    parser.add_argument("--routing-only", action="store_true", help="measure the routing plan (and its job) only")
    parser.add_argument("--db", default="reward_studio_bench_scale", help="PostgreSQL database to (re)create; one per concurrent run")
    parser.add_argument("--inline-pool", type=int, default=None, help="ROUTING_INLINE_POOL for the server")
    args = parser.parse_args()
    global DB_NAME
    DB_NAME = args.db
    sizes = [int(s.replace("_", "")) for s in args.sizes.split(",") if s.strip()]

    # exports at 1M comparisons are about 650 MB each: they go to a folder removed at the end
    artifacts = tempfile.mkdtemp(prefix="reward-studio-scale-")
    env = {"SECRET_KEY": "bench-only-key", **os.environ, "DATABASE_URL": f"postgres://postgres@127.0.0.1:5432/{DB_NAME}",
           "DJANGO_SETTINGS_MODULE": "webapp.settings", "LOG_LEVEL": "WARNING", "DATABASE_POOL_SIZE": "8",
           "ARTIFACT_ROOT": artifacts, "CELERY_BROKER_URL": os.environ.get("CELERY_BROKER_URL", "memory://"),
           **({"ROUTING_INLINE_POOL": str(args.inline_pool)} if args.inline_pool is not None else {})}
    os.environ.update(env)
    # this process drops and recreates the database between sizes: no pooled connections here
    os.environ.pop("DATABASE_POOL_SIZE")
    import django

    django.setup()
    out: dict = {"sizes": {}}
    try:
        for n in sizes:
            out["sizes"][str(n)] = run_size(n, args, env)
            print(json.dumps({str(n): out["sizes"][str(n)]}), file=sys.stderr, flush=True)
    finally:
        shutil.rmtree(artifacts, ignore_errors=True)
    if args.routing_only:
        print(json.dumps(out))
        return
    first, last = out["sizes"][str(sizes[0])], out["sizes"][str(sizes[-1])]
    label_ratio = last["labels_seeded"] / max(first["labels_seeded"], 1)
    out["targets"] = {
        "queue_p99_ratio": round(last["queue"]["p99_ms"] / max(first["queue"]["p99_ms"], 0.1), 2),
        "queue_p99_ok": last["queue"]["p99_ms"] <= 1.5 * first["queue"]["p99_ms"],
        "labels_ratio": round(label_ratio, 1),
        **{f"{op}_time_ratio": round(last[op]["seconds"] / max(first[op]["seconds"], 0.01), 1)
           for op in ("agreement_api", "export")},
        **{f"{op}_peak_growth_mb": [out["sizes"][str(n)][op]["server_peak_growth_mb"] for n in sizes]
           for op in ("agreement_api", "agreement_page", "export")},
    }
    print(json.dumps(out))


if __name__ == "__main__":
    main()
