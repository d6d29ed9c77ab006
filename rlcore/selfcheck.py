"""``python -m rlcore selfcheck``: a short job that prints metric lines, for checking the plumbing.

It exercises exactly what a training run does towards its launcher — progress, metrics, a log
line on stderr, an exit code — without any model, so the job framework can be proven end to end.
"""

from __future__ import annotations

import math
import sys
import time

from rlcore.events import emit_metric, emit_progress


def run_selfcheck(steps: int, interval: float, fail_at: int | None) -> int:
    """Each step works for ``interval`` seconds, then reports. SIGTERM stops it as it stops a training run:
    at the end of the current step, exit 143; if that step was the last, the run is complete and exits 0."""
    from rlcore.training.runtime import EXIT_STOPPED, StopRequest

    stop = StopRequest().install()
    try:
        for step in range(1, steps + 1):
            if fail_at is not None and step == fail_at:
                print(f"selfcheck: deliberate failure at step {step}", file=sys.stderr)
                return 3
            time.sleep(interval)
            emit_metric(step, "loss", 1.0 / step)
            emit_metric(step, "reward", math.log1p(step))
            emit_progress(step, steps)
            if stop.requested and step < steps:
                return EXIT_STOPPED
        print("selfcheck: ok", file=sys.stderr)
        return 0
    finally:
        stop.uninstall()


def register(subparsers) -> None:
    parser = subparsers.add_parser("selfcheck", help="print a few metric lines (plumbing check)")
    parser.add_argument("--steps", type=int, default=5, help="number of steps to emit")
    parser.add_argument("--interval", type=float, default=0.2, help="seconds between steps")
    parser.add_argument("--fail-at", type=int, default=None, help="exit non-zero at this step")
    parser.set_defaults(handler=lambda args: run_selfcheck(args.steps, args.interval, args.fail_at))
