"""SSE fan-out: N concurrent dashboard streams on one job; latency from metric write to receipt.

Starts the application itself (uvicorn, the production ASGI server) against PostgreSQL and Redis,
opens N EventSource-style streams on one running job, then writes metric points through the same
service the worker's runner uses (`job_record_events`: database insert + Redis publish). Each
point's value is its write time, so each client measures write -> receipt latency exactly.

usage: python bench/sse_fanout.py [--streams 200] [--points 60] [--interval 0.1]
Needs PostgreSQL and Redis (bin/test starts them); prints one JSON line. Target: p95 < 250 ms.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.harness import fresh_database, percentile, start_web_server  # noqa: E402
DB_NAME = "reward_studio_bench_sse"


async def stream(url: str, cookie: dict, latencies: list[float], ready: asyncio.Event, counter: list[int], n: int,
                 expected: int) -> int:
    import httpx

    received = 0
    async with httpx.AsyncClient(cookies=cookie, timeout=None) as client:
        async with client.stream("GET", url) as response:
            counter[0] += 1
            if counter[0] == n:
                ready.set()
            async for line in response.aiter_lines():
                if line.startswith("data: ["):
                    now = time.time()
                    for point in json.loads(line[6:]):
                        if point["name"] == "bench/written_at":
                            latencies.append((now - point["value"]) * 1000)
                            received += 1
                    if received >= expected:
                        return received
    return received


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--streams", type=int, default=200)
    parser.add_argument("--points", type=int, default=60)
    parser.add_argument("--interval", type=float, default=0.1)
    args = parser.parse_args()

    env = {"SECRET_KEY": "bench-only-key", **os.environ, "DATABASE_URL": f"postgres://postgres@127.0.0.1:5432/{DB_NAME}",
           "REDIS_URL": os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/9"),
           "CELERY_BROKER_URL": "redis://127.0.0.1:6379/8", "DJANGO_SETTINGS_MODULE": "webapp.settings"}
    fresh_database(env)
    os.environ.update(env)
    import django

    django.setup()
    from django.contrib.auth import get_user_model
    from django.test import Client

    from webapp.jobs.models import Job, JobState
    from webapp.jobs.services import job_record_events
    from webapp.projects.services import project_create

    user = get_user_model().objects.create_user("bench", password="bench-password")
    project = project_create(user=user, name="SSE bench")
    # A running job nobody executes: the bench itself plays the worker's runner.
    job = Job.objects.create(project=project, kind="bench", created_by=user, state=JobState.RUNNING)
    client = Client()
    client.force_login(user)
    cookie = {"sessionid": client.cookies["sessionid"].value}

    server, port = start_web_server(env, cwd=ROOT)
    try:
        base = f"http://127.0.0.1:{port}"
        url = f"{base}/projects/{project.pk}/jobs/{job.pk}/events/"
        latencies: list[float] = []

        def writer(start: threading.Event) -> None:
            start.wait()
            time.sleep(0.5)  # let every stream finish its replay
            for step in range(1, args.points + 1):
                job_record_events(job_id=job.pk, events=[
                    {"kind": "metric", "step": step, "name": "bench/written_at", "value": time.time()}])
                time.sleep(args.interval)

        async def run() -> list[int]:
            ready = asyncio.Event()
            counter = [0]
            tasks = [asyncio.create_task(stream(url, cookie, latencies, ready, counter, args.streams, args.points))
                     for _ in range(args.streams)]
            await asyncio.wait_for(ready.wait(), 60)
            start.set()
            done, pending = await asyncio.wait(tasks, timeout=args.points * args.interval + 30)
            for task in pending:
                task.cancel()
            return [t.result() for t in done]

        start = threading.Event()
        thread = threading.Thread(target=writer, args=(start,), daemon=True)
        thread.start()
        received = asyncio.run(run())
        thread.join()
        expected = args.streams * args.points
        print(json.dumps({
            "bench": "sse_fanout", "streams": args.streams, "points": args.points,
            "deliveries": len(latencies), "expected_deliveries": expected,
            "complete_streams": sum(1 for r in received if r >= args.points),
            "p50_ms": round(statistics.median(latencies), 1) if latencies else None,
            "p95_ms": round(percentile(latencies, 95), 1) if latencies else None,
            "max_ms": round(max(latencies), 1) if latencies else None,
        }))
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=10)
        from django.db import connections

        connections.close_all()
        subprocess.run(["dropdb", "-h", "127.0.0.1", "-U", "postgres", "--if-exists", "--force", DB_NAME], env=env)


if __name__ == "__main__":
    main()
