"""Run a job's rlcore command as a child process, stream what it prints into the database,
and honour cancel requests.

The child runs in its own session (process group), so a cancel kills it and everything it
started (dataloader workers, `accelerate launch` ranks) with one signal, and a crash in the
child never takes the worker down. If the worker itself dies, the kernel sends the child
SIGTERM (PR_SET_PDEATHSIG), so no training process outlives its worker unobserved.
"""

from __future__ import annotations

import collections
import ctypes
import logging
import os
import queue
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Callable

from rlcore.events import NOTE_PREFIX, parse_line

logger = logging.getLogger(__name__)

POLL_SECONDS = 0.5
FLUSH_SECONDS = 0.25
LOG_TAIL_LINES = 200
NOTE_LINES = 50
PR_SET_PDEATHSIG = 1


@dataclass
class ChildResult:
    returncode: int
    cancelled: bool
    log_tail: str


def _die_with_parent() -> None:  # runs in the child between fork and exec
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    except OSError:
        pass  # not Linux: the reaper still marks the job failed


def kill_process_group(child: subprocess.Popen, grace_seconds: float) -> None:
    """SIGTERM the child's group, give the child `grace_seconds` to save a checkpoint and exit,
    then SIGKILL the group. (The exit is seen through poll(): an exited but unreaped child is a
    zombie that still "exists" for kill(pid, 0).)"""
    try:
        os.killpg(child.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + grace_seconds
    while time.monotonic() < deadline and child.poll() is None:
        time.sleep(0.05)
    try:
        os.killpg(child.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def run_child(
    argv: list[str],
    *,
    cwd: Path,
    env: dict[str, str],
    on_events: Callable[[list[dict]], None],
    on_tick: Callable[[int, str], bool],
    kill_grace_seconds: float,
) -> ChildResult:
    """Run `argv`; `on_events` gets parsed event batches, `on_tick(pid, log_tail)` is called every
    POLL_SECONDS and returns True when the job should be cancelled."""
    cwd.mkdir(parents=True, exist_ok=True)
    child = subprocess.Popen(
        argv, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        start_new_session=True, preexec_fn=_die_with_parent, text=True, bufsize=1, errors="replace",
    )
    events: queue.Queue = queue.Queue()
    log = collections.deque(maxlen=LOG_TAIL_LINES)
    # rlcore's own lines (``rlcore: ...``: what it chose and why, what it dropped, warnings) are kept even
    # after they scroll out of the tail; the job page shows them as the run's notes.
    notes = collections.deque(maxlen=NOTE_LINES)

    def read_output() -> None:
        assert child.stdout is not None
        for line in child.stdout:
            line = line.replace("\x00", "\ufffd")  # PostgreSQL text cannot hold NUL (log tail)
            event = parse_line(line)
            if event is None:
                log.append(line.rstrip("\n"))
                if line.startswith(NOTE_PREFIX):
                    notes.append(line.rstrip("\n"))
            else:
                events.put(event)

    def log_text() -> str:
        shown = set(log)
        return "\n".join([note for note in notes if note not in shown] + list(log))

    reader = threading.Thread(target=read_output, daemon=True)
    reader.start()

    def drain() -> None:
        batch = []
        while True:
            try:
                batch.append(events.get_nowait())
            except queue.Empty:
                break
        if batch:
            on_events(batch)

    cancelled = False
    next_tick = 0.0
    try:
        while child.poll() is None:
            drain()
            if time.monotonic() >= next_tick:
                next_tick = time.monotonic() + POLL_SECONDS
                if on_tick(child.pid, log_text()) and not cancelled:
                    cancelled = True
                    kill_process_group(child, kill_grace_seconds)
            time.sleep(FLUSH_SECONDS)
        reader.join(timeout=5)
        drain()
    finally:
        # Whatever happened here (even a failure to record events), nothing of the child's group
        # may outlive this function: a forked data loader, or the child itself if we raised.
        try:
            os.killpg(child.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        child.wait()
    return ChildResult(returncode=child.returncode, cancelled=cancelled, log_tail=log_text())


def child_argv(argv: list[str], processes_per_job: int) -> list[str]:
    """The command line for a job: training spans this worker's GPUs through `accelerate launch`.

    `--multi_gpu` says so explicitly: without it accelerate starts one process when it cannot count
    several GPUs (the same command on CPUs runs distributed over gloo, which the tests use).

    >>> child_argv(["selfcheck"], 4)[1:]
    ['-m', 'rlcore', 'selfcheck']
    >>> child_argv(["train", "grpo", "spec.json"], 4)[1:]
    ['-m', 'accelerate.commands.launch', '--multi_gpu', '--num_processes', '4', '-m', 'rlcore', 'train', 'grpo', 'spec.json']
    """
    if argv[:1] == ["train"] and processes_per_job > 1:
        return [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes",
                str(processes_per_job), "-m", "rlcore", *argv]
    return [sys.executable, "-m", "rlcore", *argv]


def _error_text(result: ChildResult) -> str:
    """The child's own ``error: ...`` line (rlcore's message for a user error) first, then the exit code and
    the log's tail: retry warnings of a hub client, say, come before it and must not bury it."""
    lines = [line for line in result.log_tail.splitlines() if line.strip()]
    tail = "\n".join(lines[-20:])
    user_errors = [line.removeprefix("error: ") for line in lines if line.startswith("error: ")]
    head = f"{user_errors[-1]}\n" if user_errors else ""
    return f"{head}The job's process exited with code {result.returncode}.\n{tail}".strip()


def across_reconnects(call: Callable, *, give_up_after: float) -> Callable:
    """``call`` retried while the database is away: a dropped connection (a restarted or failed-over
    server, a killed backend) is closed and reopened on the next try, with a growing pause. Only a
    database away for longer than ``give_up_after`` seconds (the heartbeat timeout, after which the
    reaper would fail the job anyway) lets the error through."""
    from django.db import InterfaceError, OperationalError, connection

    def retrying(*args, **kwargs):
        first_failure, pause = None, 0.1
        while True:
            try:
                return call(*args, **kwargs)
            except (OperationalError, InterfaceError) as exc:
                now = time.monotonic()
                first_failure = first_failure if first_failure is not None else now
                if now - first_failure >= give_up_after:
                    raise
                logger.warning("database unavailable (%s); retrying in %.1f s", exc, pause)
                try:
                    connection.close()  # a dead connection is never reused; the next query opens one
                except Exception:
                    pass
                time.sleep(pause)
                pause = min(pause * 2, 2.0)

    return retrying


def execute_job(job_id: int, worker: str = "") -> None:
    """Claim the job, run its command, record the outcome. A no-op for a job that is not queued."""
    from django.conf import settings

    from webapp.jobs import services as job_services
    from webapp.jobs.models import Job, JobState

    # Every write of the job's record survives a dropped database connection (see across_reconnects).
    services = SimpleNamespace(**{
        name: across_reconnects(getattr(job_services, name), give_up_after=settings.JOB_HEARTBEAT_TIMEOUT_SECONDS)
        for name in ("job_claim", "job_heartbeat", "job_record_events", "job_finish")})
    worker_name = worker or f"{socket.gethostname()}:{os.getpid()}"
    if not services.job_claim(job_id=job_id, worker=worker_name):
        logger.info("job %s is not queued any more; ignoring redelivered message", job_id)
        return
    job = across_reconnects(Job.objects.get, give_up_after=settings.JOB_HEARTBEAT_TIMEOUT_SECONDS)(pk=job_id)
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "REWARD_STUDIO_JOB_ID": str(job_id)}
    # One worker per machine (or per GPU group) sets this to the number of GPUs it owns.
    argv = child_argv(job.argv, int(os.environ.get("REWARD_STUDIO_PROCESSES_PER_JOB", "1")))
    try:
        result = run_child(
            argv,
            cwd=Path(job.output_dir),
            env=env,
            on_events=lambda batch: services.job_record_events(job_id=job_id, events=batch),
            on_tick=lambda pid, tail: services.job_heartbeat(job_id=job_id, pid=pid, log_tail=tail),
            kill_grace_seconds=settings.JOB_KILL_GRACE_SECONDS,
        )
    except Exception as exc:  # the worker must record why, not leave the job running
        logger.exception("job %s could not run", job_id)
        services.job_finish(job_id=job_id, state=JobState.FAILED, error=f"The worker could not run the job: {exc}")
        return
    # The exit code decides, not the cancel flag: a cancel that reached a run as it finished (its last
    # step, publishing its model) finds a child that exits 0 with everything written, and a finished
    # run wins. Marking it cancelled would hide its model and invite a resume past max_steps.
    if result.returncode == 0:
        services.job_finish(job_id=job_id, state=JobState.SUCCEEDED, log_tail=result.log_tail)
    elif result.cancelled:
        services.job_finish(job_id=job_id, state=JobState.CANCELLED, error="Cancelled by request.",
                            log_tail=result.log_tail)
    else:
        services.job_finish(job_id=job_id, state=JobState.FAILED, error=_error_text(result),
                            log_tail=result.log_tail)
