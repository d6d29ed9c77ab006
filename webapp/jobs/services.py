"""Writes to jobs. The worker's runner calls these; so do pages and the API.

Every state change is a conditional UPDATE ... WHERE state = <expected>: whoever moves a job
first wins and everyone else sees 0 rows changed, so a redelivered Celery message, the reaper
and a late-finishing worker cannot overwrite each other.
"""

from __future__ import annotations

import logging
import math
import os
import threading
from datetime import timedelta
from pathlib import Path
from typing import Any, Callable, Iterable

import django.dispatch
from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone

from webapp.jobs.models import Job, JobArtifact, JobSample, JobState, MetricPoint, Queue

LOG_TAIL_LINES = 200
logger = logging.getLogger(__name__)

# Sent inside the transaction that makes a job `succeeded`; receivers record what it made.
job_succeeded = django.dispatch.Signal()
# Sent inside the transaction that makes a job `failed` or `cancelled`: receivers record what it kept (the
# responses a cancelled generation wrote), so whoever sees the job ended sees those too.
job_stopped = django.dispatch.Signal()
# Sent after a job reached any final state (succeeded, failed, cancelled): receivers clean up.
job_finished = django.dispatch.Signal()


def job_output_dir(job: Job) -> Path:
    return Path(settings.ARTIFACT_ROOT) / "jobs" / str(job.pk)


@transaction.atomic
def job_create(
    *, project, user, kind: str, argv: list[str], spec: dict | None = None, queue: str = Queue.DEFAULT,
    title: str = "", parent: Job | None = None, output_dir: str | None = None,
) -> Job:
    if queue not in Queue.values:
        raise ValidationError({"queue": f"Unknown queue '{queue}'. Choose one of: {', '.join(Queue.values)}."})
    _check_queued_jobs_cap(user)
    job = Job.objects.create(
        project=project, kind=kind, argv=list(argv), spec=spec or {}, queue=queue, title=title or kind,
        created_by=user, parent=parent,
    )
    job.output_dir = output_dir or str(job_output_dir(job))
    job.save(update_fields=["output_dir"])
    # Enqueue only once the row is committed, or a fast worker could look for a job not yet visible.
    transaction.on_commit(lambda: _enqueue(job.pk, queue))
    return job


def _check_queued_jobs_cap(user) -> None:
    """Refuse a job when ``user`` already has JOB_MAX_QUEUED_PER_USER waiting, so one person (or a
    runaway script) cannot fill the workers' queues for everyone. The user's row is locked first:
    two launches at the same moment are counted one after the other, never both under the cap."""
    cap = settings.JOB_MAX_QUEUED_PER_USER
    get_user_model().objects.select_for_update().filter(pk=user.pk).first()
    waiting = Job.objects.filter(created_by=user, state=JobState.QUEUED).count()
    if waiting >= cap:
        raise ValidationError({"queue": f"You already have {waiting} jobs waiting for a worker (at most {cap}, "
                                        "JOB_MAX_QUEUED_PER_USER): wait for them to start, or cancel some."})


def _enqueue(job_id: int, queue: str) -> None:
    from workers.tasks import run_job

    run_job.apply_async(args=[job_id], queue=queue)


def job_request_cancel(*, job: Job) -> Job:
    """A queued job is cancelled at once; a running one is flagged, and its worker kills it."""
    now = timezone.now()
    fields = {"state": JobState.CANCELLED, "cancel_requested": True, "finished_at": now,
              "error": "Cancelled before it started."}
    if _stop(job_id=job.pk, from_state=JobState.QUEUED, fields=fields):
        job.refresh_from_db()
        transaction.on_commit(lambda: _keep_history(job.pk))
        job_finished.send(sender=Job, job=job)
    else:
        Job.objects.filter(pk=job.pk, state=JobState.RUNNING).update(cancel_requested=True)
        job.refresh_from_db()
    return job


def job_claim(*, job_id: int, worker: str) -> bool:
    """Move a queued job to running for this worker. False if it is not queued (a redelivery)."""
    now = timezone.now()
    return bool(
        Job.objects.filter(pk=job_id, state=JobState.QUEUED).update(
            state=JobState.RUNNING, worker=worker, started_at=now, heartbeat_at=now
        )
    )


def job_heartbeat(*, job_id: int, pid: int | None = None, log_tail: str | None = None) -> bool:
    """Refresh the heartbeat; returns whether a cancel has been requested."""
    fields: dict[str, Any] = {"heartbeat_at": timezone.now()}
    if pid is not None:
        fields["pid"] = pid
    if log_tail is not None:
        fields["log_tail"] = log_tail
    Job.objects.filter(pk=job_id, state=JobState.RUNNING).update(**fields)
    return Job.objects.filter(pk=job_id, cancel_requested=True).exists()


def _without_nul(value: Any) -> Any:
    """PostgreSQL text and JSONB cannot hold U+0000, which an untrained policy happily generates."""
    if isinstance(value, str):
        return value.replace("\x00", "\ufffd")
    if isinstance(value, dict):
        return {_without_nul(k): _without_nul(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_without_nul(v) for v in value]
    return value


def job_record_events(*, job_id: int, events: Iterable[dict[str, Any]]) -> None:
    """Store what the child printed: metrics, progress, samples, artifacts (rlcore.events)."""
    metrics, samples, artifacts, progress = [], [], [], None
    for event in map(_without_nul, events):
        kind = event.get("kind")
        if kind == "metric":
            value = event["value"]
            metrics.append(MetricPoint(
                job_id=job_id, step=event["step"], name=event["name"][:200],
                value=value if math.isfinite(value) else None,
            ))
        elif kind == "progress":
            progress = (event["step"], event["total"])
        elif kind == "sample":
            samples.append(JobSample(job_id=job_id, step=event["step"], data=event))
        elif kind == "artifact":
            artifacts.append(JobArtifact(
                job_id=job_id, type=str(event.get("type", ""))[:60], path=str(event.get("path", ""))[:1000],
                data={k: v for k, v in event.items() if k not in ("kind", "type", "path")},
            ))
    with transaction.atomic():
        # The job's last point before these travels with them: a dashboard that has not seen it missed a
        # message (Redis was down, say) and reads the gap from the database instead of skipping it.
        previous_id = (MetricPoint.objects.filter(job_id=job_id).order_by("-pk").values_list("pk", flat=True).first()
                       if metrics else None)
        MetricPoint.objects.bulk_create(metrics)
        JobSample.objects.bulk_create(samples)
        JobArtifact.objects.bulk_create(artifacts)
        if progress:
            Job.objects.filter(pk=job_id).update(progress_step=progress[0], progress_total=progress[1])
    from webapp.jobs import live

    live.publish_job_update(job_id, metrics=metrics, samples=samples, progress=progress, after_id=previous_id or 0)


def job_finish(*, job_id: int, state: str, error: str = "", log_tail: str | None = None) -> bool:
    """Move a running job to a final state. False if something else already finished it.

    A job becomes `succeeded` in the same transaction in which the `job_succeeded` receivers record
    what it made (a registered model, labels, embeddings): whoever sees it succeeded sees its results
    too. If recording fails, the job is failed instead, with the reason. A job becomes `failed` or `cancelled`
    in the transaction that sends `job_stopped` (``_stop``), so what it kept is there as soon as it is seen.
    """
    fields: dict[str, Any] = {"state": state, "finished_at": timezone.now(), "error": error[-8000:]}
    if log_tail is not None:
        fields["log_tail"] = log_tail
    if state == JobState.SUCCEEDED:
        try:
            with transaction.atomic():
                moved = bool(Job.objects.filter(pk=job_id, state=JobState.RUNNING).update(**fields))
                if moved:
                    job_succeeded.send(sender=Job, job=Job.objects.get(pk=job_id))
        except Exception as exc:  # a receiver failed: the job's results are not usable as they stand
            logger.exception("recording the results of job %s failed", job_id)
            state = JobState.FAILED
            fields.update(state=state, error=f"The job finished, but recording its results failed: {exc}"[-8000:])
            moved = _stop(job_id=job_id, from_state=JobState.RUNNING, fields=fields)
    else:
        moved = _stop(job_id=job_id, from_state=JobState.RUNNING, fields=fields)
    if moved:
        from webapp.jobs import live

        live.publish_job_update(job_id, state=state)
        # After the final state is committed, so the text holds every point the run wrote; the open page
        # already has them, the next one to open reads the file instead of the rows.
        transaction.on_commit(lambda: _keep_history(job_id))
        job_finished.send(sender=Job, job=Job.objects.get(pk=job_id))
    return moved


def metric_history_keep(*, job: Job) -> str:
    """Build a finished job's history text (selectors.metric_history_text) from its rows and keep it in the job's
    folder (selectors.metric_history_path), where the history endpoint reads it without touching the rows; files of
    the row's earlier states go. The file is written whole under a temporary name and renamed, so a reader sees
    the old file, none, or the new one. If it cannot be written the text is still returned: the rows stay the
    record, and the next read tries again."""
    from webapp.jobs import selectors

    text = selectors.metric_history_text(job=job)
    path = selectors.metric_history_path(job)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        for old in path.parent.glob("metric-history.*.json"):
            if old != path:
                old.unlink(missing_ok=True)
        partial = path.parent / f".{path.name}.{os.getpid()}-{threading.get_ident()}.tmp"
        partial.write_text(text)
        os.replace(partial, path)
    except OSError:
        logger.warning("could not keep the metric history of job %s in %s", job.pk, path, exc_info=True)
    return text


def _keep_history(job_id: int) -> None:
    # The job is already final and announced: a failure here costs only speed (the rows are read instead).
    try:
        metric_history_keep(job=Job.objects.get(pk=job_id))
    except Exception:
        logger.exception("keeping the metric history of job %s failed", job_id)


def _stop(*, job_id: int, from_state: str, fields: dict[str, Any]) -> bool:
    """Move a job from ``from_state`` to failed/cancelled, sending `job_stopped` in the same transaction (what a
    stopped job kept is recorded before anyone sees it stopped). If a receiver fails, the job still stops — a
    job must never stay running because its partial output could not be recorded — and the failure is logged."""
    try:
        with transaction.atomic():
            moved = bool(Job.objects.filter(pk=job_id, state=from_state).update(**fields))
            if moved:
                job_stopped.send(sender=Job, job=Job.objects.get(pk=job_id))
            return moved
    except Exception:
        logger.exception("recording what job %s kept failed", job_id)
        return bool(Job.objects.filter(pk=job_id, state=from_state).update(**fields))


def job_reap_stale(*, now=None) -> list[int]:
    """Fail running jobs whose worker stopped sending heartbeats (killed, machine lost)."""
    now = now or timezone.now()
    cutoff = now - timedelta(seconds=settings.JOB_HEARTBEAT_TIMEOUT_SECONDS)
    reaped = []
    for job_id in Job.objects.filter(state=JobState.RUNNING, heartbeat_at__lt=cutoff).values_list("pk", flat=True):
        if job_finish(
            job_id=job_id, state=JobState.FAILED,
            error=(
                f"The worker stopped sending heartbeats for over "
                f"{settings.JOB_HEARTBEAT_TIMEOUT_SECONDS:g} s (it was killed or lost its machine). "
                "Resume the job to continue from its last checkpoint."
            ),
        ):
            reaped.append(job_id)
    return reaped


def job_resend_lost(*, messages_waiting: Callable[[str], int | None], now=None) -> list[int]:
    """Send again the queued jobs whose message the broker lost (a Redis restarted without persistence
    forgets its queues; the jobs' rows still say queued, and would forever).

    A queue has lost messages when it holds fewer than the jobs queued on it (``messages_waiting(queue)``,
    None when the broker cannot be asked). Then each job queued there for over JOB_QUEUED_RESEND_SECONDS
    (so never one whose message is still being sent) is sent again. Which of them lost theirs cannot be
    told, but a duplicate is harmless: job_claim lets exactly one message start a job, and the next round
    finds the queue full again.
    """
    now = now or timezone.now()
    cutoff = now - timedelta(seconds=settings.JOB_QUEUED_RESEND_SECONDS)
    queued = Job.objects.filter(state=JobState.QUEUED).order_by("pk")
    resent = []
    for queue in queued.filter(created_at__lt=cutoff).order_by().values_list("queue", flat=True).distinct():
        waiting = messages_waiting(queue)
        expected = queued.filter(queue=queue).count()
        if waiting is None or waiting >= expected:
            continue
        logger.warning("queue %s holds %s messages for %s queued jobs: sending the older ones again",
                       queue, waiting, expected)
        for job_id in queued.filter(queue=queue, created_at__lt=cutoff).values_list("pk", flat=True):
            _enqueue(job_id, queue)
            resent.append(job_id)
    return resent
