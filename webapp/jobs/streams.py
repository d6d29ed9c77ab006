"""Server-Sent Events for live job dashboards.

One Redis pub/sub subscription per web process (a pattern over every job's channel) feeds an
in-process hub, which hands each message to the streams watching that job. A stream first
registers with the hub, then replays from the database everything after the client's
Last-Event-ID, then forwards live messages, so a reconnecting client misses nothing and sees
nothing twice (event ids are MetricPoint ids, which only grow). Each message names the job's point
before its own (``after``); a stream that has not sent that one missed messages (Redis restarted, a
full queue) and replays the gap from the database.

Events:
- ``metrics`` (id = last MetricPoint id in it): ``[{"step", "name", "value", "time"}, ...]`` (time: Unix seconds)
- ``status``: ``{"state", "progress": [step, total] | null}``; the page re-renders its status card
- ``samples``: new sample completions exist; the page re-renders its samples table
- ``done``: the job finished; the stream ends
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections import defaultdict
from typing import AsyncIterator

from asgiref.sync import sync_to_async
from django.conf import settings

from webapp.jobs.live import channel_for, point_time
from webapp.jobs.models import FINISHED_STATES, Job, JobSample, MetricPoint

logger = logging.getLogger(__name__)

KEEPALIVE_SECONDS = 15.0
POLL_SECONDS = 1.0  # without Redis, or as a safety net if a message was lost
REPLAY_LIMIT = 5000


class JobHub:
    """Fan-out of one Redis pattern subscription to many local listeners."""

    def __init__(self, redis_url: str):
        self.redis_url = redis_url
        self.listeners: dict[int, set[asyncio.Queue]] = defaultdict(set)
        self.task: asyncio.Task | None = None

    def listen(self, job_id: int) -> asyncio.Queue:
        queue: asyncio.Queue = asyncio.Queue(maxsize=1000)
        self.listeners[job_id].add(queue)
        if self.task is None or self.task.done():
            self.task = asyncio.get_running_loop().create_task(self._run())
        return queue

    def leave(self, job_id: int, queue: asyncio.Queue) -> None:
        self.listeners[job_id].discard(queue)
        if not self.listeners[job_id]:
            del self.listeners[job_id]

    async def _run(self) -> None:
        import redis.asyncio as aioredis

        prefix = channel_for(0)[:-1]
        while True:
            try:
                client = aioredis.Redis.from_url(self.redis_url)
                pubsub = client.pubsub()
                await pubsub.psubscribe(prefix + "*")
                async for message in pubsub.listen():
                    if message.get("type") != "pmessage":
                        continue
                    job_id = int(message["channel"].decode().rsplit(":", 1)[1])
                    for queue in list(self.listeners.get(job_id, ())):
                        try:
                            queue.put_nowait(message["data"])
                        except asyncio.QueueFull:
                            pass  # a stalled client catches up from the database on its next poll
            except asyncio.CancelledError:
                raise
            except Exception:
                logger.warning("live-update subscription lost; reconnecting", exc_info=True)
                await asyncio.sleep(1)


_hubs: dict[int, JobHub] = {}


def hub() -> JobHub | None:
    if not settings.REDIS_URL:
        return None
    loop_id = id(asyncio.get_running_loop())
    if loop_id not in _hubs:
        _hubs[loop_id] = JobHub(settings.REDIS_URL)
    return _hubs[loop_id]


def format_event(event: str, data, event_id: int | None = None) -> str:
    head = f"id: {event_id}\n" if event_id is not None else ""
    return f"{head}event: {event}\ndata: {json.dumps(data)}\n\n"


# Reads run on the shared thread pool, not one thread per stream: 200 open dashboards must not
# hold 200 database connections.
@sync_to_async(thread_sensitive=False)
def _metrics_after(job_id: int, after_id: int) -> list[tuple[int, int, str, float | None, float | None]]:
    return list(
        MetricPoint.objects.filter(job_id=job_id, pk__gt=after_id).order_by("pk")
        .values_list("pk", "step", "name", "value", "created_at")[:REPLAY_LIMIT]
    )


@sync_to_async(thread_sensitive=False)
def _job_status(job_id: int) -> tuple[str, int, int, int]:
    job = Job.objects.filter(pk=job_id).values("state", "progress_step", "progress_total").first()
    if job is None:
        return "deleted", 0, 0, 0
    return job["state"], job["progress_step"], job["progress_total"], JobSample.objects.filter(job_id=job_id).count()


async def job_event_stream(job_id: int, last_event_id: int) -> AsyncIterator[str]:
    """Replay from the database, then forward live messages; the database is polled as a
    safety net whenever nothing arrived for a while (or always, without Redis)."""
    job_hub = hub()
    queue = job_hub.listen(job_id) if job_hub else None
    sent_id = last_event_id
    status = None

    async def catch_up():
        nonlocal sent_id, status
        while True:
            rows = await _metrics_after(job_id, sent_id)
            if rows:
                sent_id = rows[-1][0]
                yield format_event("metrics", [{"step": s, "name": n, "value": v, "time": point_time(t)}
                                               for _, s, n, v, t in rows], sent_id)
            if len(rows) < REPLAY_LIMIT:
                break
        current = await _job_status(job_id)
        if current != status:
            if status is None or current[3] != status[3]:
                yield format_event("samples", {"count": current[3]})
            status = current
            yield format_event("status", {"state": current[0], "progress": [current[1], current[2]]})

    try:
        yield "retry: 2000\n\n"
        must_read_record = True
        while True:
            if must_read_record:
                async for chunk in catch_up():
                    yield chunk
                if status[0] in FINISHED_STATES or status[0] == "deleted":
                    yield format_event("done", {"state": status[0]})
                    return
            if queue is None:
                await asyncio.sleep(POLL_SECONDS)
                continue
            try:
                raw = await asyncio.wait_for(queue.get(), timeout=KEEPALIVE_SECONDS)
            except asyncio.TimeoutError:
                yield ": keep-alive\n\n"
                must_read_record = True
                continue
            message = json.loads(raw)
            if message.get("after", 0) > sent_id:
                # Points came before these that this stream never got (published while Redis was down,
                # or dropped by a full queue): read everything after the last one sent from the database.
                must_read_record = True
                continue
            # Live path: forward what the message carries, no database read per client.
            fresh = [m for m in message["metrics"] if m["id"] > sent_id]
            if fresh:
                sent_id = fresh[-1]["id"]
                yield format_event("metrics", [{k: m.get(k) for k in ("step", "name", "value", "time")} for m in fresh], sent_id)
            if message.get("samples"):
                yield format_event("samples", {"count": None})
            if message.get("progress"):
                yield format_event("status", {"state": "running", "progress": message["progress"]})
            # A state change is re-read from the record (and ends the stream once finished).
            must_read_record = bool(message.get("state"))
    finally:
        if job_hub and queue is not None:
            job_hub.leave(job_id, queue)
