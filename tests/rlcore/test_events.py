"""Events a run prints for its worker keep the run alive when the worker is gone."""

import os
import subprocess
import sys

from tests.conftest import ROOT


def test_a_run_outlives_a_closed_event_stream():
    """The worker's end of the pipe is closed (it was killed): emitting goes on without raising."""
    child = subprocess.Popen(
        [sys.executable, "-c",
         "import sys, time\n"
         "from rlcore.events import emit_metric\n"
         "time.sleep(0.5)\n"
         "for step in range(3):\n"
         "    emit_metric(step, 'loss', 1.0)\n"
         "sys.stderr.write('still running\\n')\n"],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env={**os.environ, "PYTHONPATH": str(ROOT)})
    child.stdout.close()  # the reader goes away before the first event
    _, err = child.communicate(timeout=60)
    assert child.returncode == 0, err.decode()
    assert b"still running" in err
