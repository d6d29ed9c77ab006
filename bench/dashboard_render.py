"""Compare page render time: 10 finished GRPO runs of 2,000 steps each, in headless Chromium.

Seeds its own PostgreSQL database (metric points written in SQL, under the names TRL's GRPOTrainer logs
with two reward functions), starts uvicorn, opens /projects/<p>/jobs/compare/?ids=... with Playwright
(Debian's /usr/bin/chromium, the flags of tests/conftest.py) and prints one JSON line: milliseconds from
navigation start to the first panel drawn, to every point received over SSE, and to every panel drawn
with every point (the last redraw, ``data-last-draw-ms``). Target: all panels drawn in < 1,000 ms.
The first load is reported apart (``first_load``: a fresh server and browser). Each seeded job's history
is kept as a finishing job's is (services.metric_history_keep, what job_finish calls), so every load reads
those files; code served with ``--serve-from`` that predates them reads the database on the first load.

Each repeat also reports where the time went: the history requests (server time to first byte, bytes on
the wire and decoded, from the Resource Timing entries) and the page's own ``dashboard:*`` performance
measures (parse, build, draw). ``--serve-from DIR`` serves another checkout of the app (e.g. the commit
before a change, from ``git archive``) with the same seed and browser, for a fair before/after.

usage: python bench/dashboard_render.py [--runs 10] [--steps 2000] [--repeats 3] [--serve-from DIR] [--database NAME]
Needs PostgreSQL and Redis (bin/test starts them).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.harness import fresh_database, start_web_server  # noqa: E402
DB_NAME = "reward_studio_bench_dashboard"  # --database changes it (two benches at once need two)

# What TRL 1.x GRPOTrainer logs per step with two reward functions (format, length) and default settings.
GRPO_METRICS = [
    "reward", "reward_std", "frac_reward_zero_std", "rewards/format/mean", "rewards/format/std",
    "rewards/length/mean", "rewards/length/std", "kl", "entropy",
    "completions/mean_length", "completions/min_length", "completions/max_length", "completions/clipped_ratio",
    "completions/mean_terminated_length", "completions/min_terminated_length", "completions/max_terminated_length",
    "clip_ratio/low_mean", "clip_ratio/low_min", "clip_ratio/high_mean", "clip_ratio/high_max", "clip_ratio/region_mean",
    "loss", "grad_norm", "learning_rate", "num_tokens", "step_time", "epoch",
]


def seed(runs: int, steps: int):
    from django.contrib.auth import get_user_model
    from django.db import connection
    from django.utils import timezone

    from webapp.jobs.models import Job, JobState, MetricPoint
    from webapp.projects.services import project_create

    user = get_user_model().objects.create_user("bench", password="bench-password")
    project = project_create(user=user, name="Dashboard bench")
    jobs = [Job.objects.create(project=project, kind="train_grpo", created_by=user, state=JobState.SUCCEEDED,
                               title=f"lr {i + 1}e-6", progress_step=steps, progress_total=steps, finished_at=timezone.now(),
                               spec={"learning_rate": (i + 1) * 1e-6, "num_generations": 8, "beta": 0.04})
            for i in range(runs)]
    with connection.cursor() as cursor:
        for job in jobs:
            # One row per (step, name), in the order a run writes them; values wander like a real run's.
            cursor.execute(
                f"INSERT INTO {MetricPoint._meta.db_table} (job_id, step, name, value, created_at) "
                "SELECT %s, s, n.name, sin(s / 50.0 + n.i) + random() * 0.2 + n.i, now() + s * interval '1 second' "
                "FROM generate_series(1, %s) AS s, unnest(%s::text[]) WITH ORDINALITY AS n(name, i) ORDER BY s, n.i",
                [job.pk, steps, GRPO_METRICS])
    from webapp.jobs.services import metric_history_keep

    for job in jobs:  # as job_finish does when a run ends
        metric_history_keep(job=job)
    return user, project, jobs


def _summed(measures: list[dict]) -> dict[str, int]:
    """The page's performance measures by name, summed over their occurrences (one per run or per panel)."""
    total: dict[str, int] = {}
    for measure in measures:
        total[measure["name"]] = total.get(measure["name"], 0) + measure["ms"]
    return total


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--serve-from", type=Path, default=ROOT, help="the checkout uvicorn serves (default: this one)")
    parser.add_argument("--database", default=DB_NAME)
    args = parser.parse_args()
    db_name = args.database

    env = {"SECRET_KEY": "bench-only-key", **os.environ, "DATABASE_URL": f"postgres://postgres@127.0.0.1:5432/{db_name}",
           "REDIS_URL": os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/9"),
           "CELERY_BROKER_URL": "redis://127.0.0.1:6379/8", "DJANGO_SETTINGS_MODULE": "webapp.settings",
           # the kept histories: written by the seed here, read by the server
           "ARTIFACT_ROOT": os.environ.get("BENCH_ARTIFACT_ROOT", tempfile.mkdtemp(prefix="bench-dashboard-"))}
    fresh_database(env)
    os.environ.update(env)
    import django

    django.setup()
    from django.test import Client
    from playwright.sync_api import sync_playwright

    user, project, jobs = seed(args.runs, args.steps)
    client = Client()
    client.force_login(user)
    cookie = client.cookies["sessionid"].value
    points = args.runs * args.steps * len(GRPO_METRICS)

    server, port = start_web_server(env, cwd=args.serve_from)
    try:
        base = f"http://127.0.0.1:{port}"
        url = f"{base}/projects/{project.pk}/jobs/compare/?ids={','.join(str(job.pk) for job in jobs)}"
        results = []
        with sync_playwright() as pw:
            browser = pw.chromium.launch(
                executable_path=os.environ.get("CHROMIUM", "/usr/bin/chromium"), headless=True,
                args=["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                      "--disable-background-networking", "--disable-component-update", "--disable-sync"])
            for repeat in range(args.repeats + 1):  # the first load warms the server and the browser cache
                context = browser.new_context(viewport={"width": 1280, "height": 900})
                context.add_cookies([{"name": "sessionid", "value": cookie, "url": base}])
                page = context.new_page()
                first_panel: list[float] = []
                page.goto(url)
                deadline = time.monotonic() + 120
                received_at = None
                while time.monotonic() < deadline:
                    state = page.evaluate("""() => { const d = document.getElementById('job-dashboard').dataset;
                        return [Number(d.pointsSeen || 0), Number(d.panelsDrawn || 0), Number(d.streamsOpen),
                                Number(d.lastDrawMs || 0), performance.now()]; }""")
                    if state[1] and not first_panel:
                        first_panel.append(state[3])
                    if state[0] >= points and received_at is None:
                        received_at = state[4]
                    if state[0] >= points and state[2] == 0 and state[4] - state[3] > 300:
                        break  # everything arrived, the streams are closed and nothing was redrawn for 300 ms
                    time.sleep(0.02)
                panels = page.evaluate("() => Object.values(window.jobDashboard.charts).filter((c) => c.plot).length")
                profile = page.evaluate("""() => ({
                    history: performance.getEntriesByType('resource').filter((e) => e.name.includes('/metrics/')).map((e) => ({
                        start: Math.round(e.startTime), ttfb: Math.round(e.responseStart - e.requestStart),
                        end: Math.round(e.responseEnd), wire: e.transferSize, decoded: e.decodedBodySize })),
                    measures: performance.getEntriesByType('measure').filter((e) => e.name.startsWith('dashboard:')).map((e) => ({
                        name: e.name, start: Math.round(e.startTime), ms: Math.round(e.duration), detail: e.detail })),
                    page_ttfb: Math.round(performance.getEntriesByType('navigation')[0].responseStart),
                    dom_content_loaded: Math.round(performance.getEntriesByType('navigation')[0].domContentLoadedEventEnd) })""")
                context.close()
                # repeat 0 (cold: a fresh server, an empty browser cache) is reported apart as first_load
                results.append({"first_panel_ms": first_panel[0] if first_panel else None,
                                "points_received_ms": round(received_at) if received_at else None,
                                "all_panels_drawn_ms": state[3], "points_seen": state[0], "panels": panels,
                                "page_ttfb_ms": profile["page_ttfb"], "dom_content_loaded_ms": profile["dom_content_loaded"],
                                "history_last_byte_ms": max((h["end"] for h in profile["history"]), default=None),
                                "history_start_ms": min((h["start"] for h in profile["history"]), default=None),
                                "history_ttfb_ms": [h["ttfb"] for h in profile["history"]],
                                "history_wire_bytes": sum(h["wire"] for h in profile["history"]),
                                "history_decoded_bytes": sum(h["decoded"] for h in profile["history"]),
                                "measures": _summed(profile["measures"]),
                                "timeline": [(m["name"].removeprefix("dashboard:"), m["start"], m["ms"], m["detail"]) for m in profile["measures"]]})
            browser.close()
        first_load, results = results[0], results[1:]
        drawn = [r["all_panels_drawn_ms"] for r in results]
        print(json.dumps({
            "bench": "dashboard_render", "served_from": str(args.serve_from), "load": os.getloadavg(), "runs": args.runs, "steps": args.steps, "metrics_per_run": len(GRPO_METRICS),
            "points": points, "first_load": first_load, "repeats": results,
            "median_all_panels_drawn_ms": statistics.median(drawn), "range_ms": [min(drawn), max(drawn)], "target_ms": 1000,
        }))
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=10)
        from django.db import connections

        connections.close_all()
        subprocess.run(["dropdb", "-h", "127.0.0.1", "-U", "postgres", "--if-exists", "--force", db_name], env=env)
        if "BENCH_ARTIFACT_ROOT" not in os.environ:
            shutil.rmtree(env["ARTIFACT_ROOT"], ignore_errors=True)


if __name__ == "__main__":
    main()
