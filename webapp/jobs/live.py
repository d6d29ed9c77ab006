"""Fan-out of job updates to live dashboards through Redis pub/sub (one channel per job).

Publishing is best effort: the database is the record, and a dashboard that missed a message
replays from it (Last-Event-ID). With no REDIS_URL, nothing is published and streams poll.
"""

from __future__ import annotations

import json
import logging
from functools import lru_cache

from django.conf import settings

logger = logging.getLogger(__name__)


def point_time(created_at) -> float | None:
    """A metric point's wall-clock time as the dashboards read it: Unix seconds, to the millisecond."""
    return round(created_at.timestamp(), 3) if created_at else None


def channel_for(job_id: int) -> str:
    return f"reward-studio:job:{job_id}"


@lru_cache(maxsize=1)
def _client():
    import redis

    return redis.Redis.from_url(settings.REDIS_URL)


def publish_job_update(job_id: int, *, metrics=(), samples=(), progress=None, state=None, after_id: int = 0) -> None:
    """``after_id``: the id of the job's last metric point before ``metrics`` (0 for none), so that a
    stream can tell that it missed some and replay them from the database."""
    if not settings.REDIS_URL:
        return
    message = {
        "after": after_id,
        "metrics": [{"id": m.pk, "step": m.step, "name": m.name, "value": m.value, "time": point_time(m.created_at)}
                    for m in metrics],
        "samples": len(samples),
        "progress": progress,
        "state": state,
    }
    try:
        _client().publish(channel_for(job_id), json.dumps(message))
    except Exception:  # a dashboard hiccup must never fail a training job
        logger.warning("could not publish update for job %s", job_id, exc_info=True)
