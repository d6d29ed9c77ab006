"""The worker's runner: the child command line, and the child's process group on the way out."""

import doctest
import os
import sys
import time
from pathlib import Path

import workers.runner
from workers.runner import run_child


def test_it_runs_the_docstring_examples():
    assert doctest.testmod(workers.runner).failed == 0


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
