"""The worker's runner: the child command line, and the child's process group on the way out."""

import os
import sys
import time
from pathlib import Path

import pytest

from workers.runner import run_child


def test_it_kills_the_childs_whole_group_even_when_recording_fails(tmp_path: Path):
    # The child forks a grandchild that would run for a minute; recording an event then fails.
    script = ("import os, sys, time\n"
              "pid = os.fork()\n"
              "if pid == 0:\n    time.sleep(60)\n    sys.exit(0)\n"
              "open('grandchild.pid', 'w').write(str(pid))\n"
              "print('{\"step\": 1, \"name\": \"loss\", \"value\": 1}', flush=True)\n"
              "time.sleep(60)\n")
    def on_events(batch):
        raise RuntimeError("database went away")

    started = time.monotonic()
    try:
        run_child([sys.executable, "-c", script], cwd=tmp_path, env=dict(os.environ), on_events=on_events,
                  on_tick=lambda pid, tail: False, kill_grace_seconds=1)
    except RuntimeError as exc:
        assert "database went away" in str(exc)
    else:
        raise AssertionError("the recording failure must reach the caller")
    assert time.monotonic() - started < 30
    grandchild = int((tmp_path / "grandchild.pid").read_text())
    time.sleep(0.2)
    try:
        os.kill(grandchild, 0)
        with open(f"/proc/{grandchild}/stat") as stat:
            assert stat.read().split(")")[-1].split()[0] == "Z", "the grandchild must be dead"
    except (ProcessLookupError, FileNotFoundError):
        pass


def test_a_training_job_spans_several_processes_through_accelerate(tmp_path: Path):
    """The worker's command for REWARD_STUDIO_PROCESSES_PER_JOB=2, run for real (on CPUs: gloo): both ranks
    train, and only the main one reports and publishes."""
    import json
    import subprocess

    from rlcore.events import parse_line
    from rlcore.training import tiny_models
    from workers.runner import child_argv

    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps({
        "backbone": str(tiny_models.build_tiny_reward_model(tmp_path / "rm")), "output_dir": str(tmp_path / "run"),
        "preference_snapshot": str(tiny_models.write_keyword_preferences(tmp_path / "labels.jsonl", 64)),
        "max_steps": 4, "per_device_train_batch_size": 4, "logging_steps": 1, "eval_fraction": 0.25}))
    done = subprocess.run(child_argv(["train", "reward-model", str(spec)], 2), cwd=Path(__file__).resolve().parents[2],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    events = [e for e in map(parse_line, done.stdout.splitlines()) if e is not None]
    assert [e["type"] for e in events if e["kind"] == "artifact"] == ["reward_model"]  # published once
    losses = [e for e in events if e["kind"] == "metric" and e["name"] == "loss"]
    assert [e["step"] for e in losses] == [1, 2, 3, 4]  # reported once per step
    # 48 training pairs, 4 per process per step: two ranks cover 8 pairs a step
    epoch = next(e["value"] for e in events if e["kind"] == "metric" and e["name"] == "epoch" and e["step"] == 1)
    assert epoch == 8 / 48
    assert (tmp_path / "run" / "model" / "config.json").is_file()


def test_it_puts_the_childs_user_error_first_above_retry_noise():
    """An unreachable hub id: the Hub client's retry warnings come first on stderr, rlcore's one-line
    error last; the job page must show that line first (issue 10, defect 11)."""
    from workers.runner import ChildResult, _error_text

    noise = [f"Retrying in {i}s [Retry {i}/5]: connection refused" for i in range(30)]
    error = "error: policy: 'Qwen/Qwen2.5-0.5B' is neither a local model directory nor a Hub model that could be reached"
    text = _error_text(ChildResult(returncode=2, cancelled=False, log_tail="\n".join([*noise, error])))
    assert text.splitlines()[0] == error.removeprefix("error: ")
    assert "exited with code 2" in text and noise[-1] in text


def test_it_lets_a_database_error_through_once_the_database_stays_away_past_the_timeout():
    import time

    import pytest
    from django.db import OperationalError

    from workers.runner import across_reconnects

    calls = []

    def database_away():
        calls.append(time.monotonic())
        raise OperationalError("server closed the connection unexpectedly")

    with pytest.raises(OperationalError):
        across_reconnects(database_away, give_up_after=0.5)()
    assert calls[-1] - calls[0] >= 0.5 and len(calls) >= 3


def test_a_child_whose_worker_is_killed_saves_a_checkpoint_and_resume_continues_from_it(tmp_path: Path):
    """The worker (here a parent running run_child, as the Celery task does) is SIGKILLed mid-training: the
    kernel's PR_SET_PDEATHSIG SIGTERM reaches the child, which saves a checkpoint long before its periodic
    one and exits; a resumed run starts after that step."""
    import json
    import signal
    import subprocess
    import sys

    from rlcore.training import tiny_models
    from rlcore.events import parse_line
    from tests.conftest import wait_for

    root = Path(__file__).resolve().parents[2]
    spec = {"backbone": str(tiny_models.build_tiny_reward_model(tmp_path / "rm")), "output_dir": str(tmp_path / "run"),
            "preference_snapshot": str(tiny_models.write_keyword_preferences(tmp_path / "labels.jsonl", 64)),
            "max_steps": 100_000, "save_steps": 50_000, "per_device_train_batch_size": 2, "logging_steps": 1,
            "eval_fraction": 0.25}
    (tmp_path / "spec.json").write_text(json.dumps(spec))
    marker = tmp_path / "child.pid"
    worker = subprocess.Popen([sys.executable, "-c", f"""
import sys
from pathlib import Path
from workers.runner import run_child
seen = []
def on_events(batch):
    seen.extend(e for e in batch if e.get("name") == "loss")
    if len(seen) >= 3 and not Path({str(marker)!r}).exists():
        Path({str(marker)!r}).write_text(str(child[0]))
child = []
run_child([sys.executable, "-m", "rlcore", "train", "reward-model", {str(tmp_path / "spec.json")!r}],
          cwd=Path({str(tmp_path)!r}), env=dict(__import__("os").environ),
          on_events=on_events, on_tick=lambda pid, tail: child.append(pid) or False, kill_grace_seconds=3)
"""], cwd=root)
    try:
        child_pid = int(wait_for(lambda: marker.exists() and marker.read_text(), 120, 0.2, "training to log"))
        worker.send_signal(signal.SIGKILL)
        worker.wait(timeout=10)
        wait_for(lambda: not Path(f"/proc/{child_pid}").exists()
                 or open(f"/proc/{child_pid}/stat").read().split(")")[-1].split()[0] == "Z", 60, 0.2,
                 "the orphaned child to save and exit")
    finally:
        if worker.poll() is None:
            worker.kill()
    checkpoints = sorted((tmp_path / "run" / "checkpoints").glob("checkpoint-*"))
    assert checkpoints, "the child exited without saving a checkpoint"
    saved_at = int(checkpoints[-1].name.split("-")[1])
    assert 3 <= saved_at < 50_000

    spec.update(resume=True, max_steps=saved_at + 2)
    (tmp_path / "spec.json").write_text(json.dumps(spec))
    done = subprocess.run([sys.executable, "-m", "rlcore", "train", "reward-model", str(tmp_path / "spec.json")],
                          cwd=root, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    steps = [e["step"] for e in map(parse_line, done.stdout.splitlines())
             if e and e["kind"] == "metric" and e["name"] == "loss"]
    assert steps == [saved_at + 1, saved_at + 2]


@pytest.mark.django_db
def test_rlcores_notes_outlive_the_log_tail_and_show_on_the_job_page(tmp_path: Path, client, people):
    """A choice made at the start (a fallback and its reason) must still be on the job page after 300 lines."""
    from webapp.jobs.models import Job
    from workers.runner import LOG_TAIL_LINES

    script = ("import sys\n"
              "print('rlcore: generation_backend auto: model.generate (no GPU)', file=sys.stderr)\n"
              "print('rlcore: warning: the clip range is inert with one step per rollout', file=sys.stderr)\n"
              f"for i in range({LOG_TAIL_LINES + 100}): print('step', i)\n")
    result = run_child([sys.executable, "-c", script], cwd=tmp_path, env=dict(os.environ), on_events=lambda b: None,
                       on_tick=lambda pid, tail: False, kill_grace_seconds=1)
    lines = result.log_tail.splitlines()
    assert lines[:2] == ["rlcore: generation_backend auto: model.generate (no GPU)",
                         "rlcore: warning: the clip range is inert with one step per rollout"]
    assert lines[-1] == f"step {LOG_TAIL_LINES + 99}" and "step 0" not in lines
    job = Job.objects.create(project=people.project, kind="selfcheck", created_by=people.users["alice"],
                             state="succeeded", log_tail=result.log_tail)
    client.force_login(people.users["dave"])
    page = client.get(f"/projects/{people.project.pk}/jobs/{job.pk}/").content.decode()
    notes = page[page.index('id="job-notes"'):page.index("</details>", page.index('id="job-notes"'))]
    assert "Notes from rlcore (2)" in notes and "generation_backend auto: model.generate (no GPU)" in notes
    assert '<li class="error">warning: the clip range is inert' in notes
