"""The line protocol between an rlcore command and whoever launched it.

A command run by a worker prints one JSON object per line on stdout; the worker's runner reads
them as they come and stores them. Anything that is not such a line is kept as log text.

- a metric: ``{"step": int, "name": str, "value": float}`` (names as TRL logs them)
- progress: ``{"kind": "progress", "step": int, "total": int}``
- a sample completion: ``{"kind": "sample", "step": int, ...}`` with its per-component rewards
- an artifact: ``{"kind": "artifact", "type": str, "path": str, ...}`` once it is fully written

>>> emit_metric(3, "loss", 0.25)
{"step": 3, "name": "loss", "value": 0.25}
>>> parse_line('{"step": 1, "name": "reward", "value": 2}')
{'step': 1, 'name': 'reward', 'value': 2.0, 'kind': 'metric'}
>>> parse_line("Loading weights...") is None
True
"""

from __future__ import annotations

import json
import math
import os
import sys
from typing import Any, TextIO


# rlcore's own lines for people (stderr): options chosen and why, rows dropped, warnings. Workers keep them
# and the job page shows them as the run's notes.
NOTE_PREFIX = "rlcore: "


def _emit(record: dict[str, Any], stream: TextIO | None = None) -> None:
    stream = stream or sys.stdout
    try:
        stream.write(json.dumps(record, default=str) + "\n")
        stream.flush()
    except BrokenPipeError:
        # The reader (the worker) died. The run's own files keep every record, and the run must live on
        # long enough to save a checkpoint (its stop handler is on the way): drop the stream, not the run.
        if stream is sys.stdout:
            sys.stdout = open(os.devnull, "w")


def emit_metric(step: int, name: str, value: float, stream: TextIO | None = None, **extra: Any) -> None:
    _emit({"step": int(step), "name": name, "value": float(value), **extra}, stream)


def emit_progress(step: int, total: int, stream: TextIO | None = None) -> None:
    _emit({"kind": "progress", "step": int(step), "total": int(total)}, stream)


def emit_sample(step: int, stream: TextIO | None = None, **record: Any) -> None:
    _emit({"kind": "sample", "step": int(step), **record}, stream)


def emit_artifact(type: str, path: str, stream: TextIO | None = None, **extra: Any) -> None:
    _emit({"kind": "artifact", "type": type, "path": str(path), **extra}, stream)


def parse_line(line: str) -> dict[str, Any] | None:
    """Return the event a line carries, or None when it is plain log text."""
    line = line.strip()
    if not line.startswith("{"):
        return None
    try:
        record = json.loads(line)
    except ValueError:
        return None
    if not isinstance(record, dict):
        return None
    if "kind" in record:
        return record if record["kind"] in ("progress", "sample", "artifact") else None
    if isinstance(record.get("name"), str) and "value" in record and "step" in record:
        try:
            value = float(record["value"])
            step = int(record["step"])
        except (TypeError, ValueError):
            return None
        # NaN/inf are real signals (a diverging loss) but cannot be stored as JSON numbers.
        if not math.isfinite(value):
            record["non_finite"] = str(value)
        return {**record, "step": step, "value": value, "kind": "metric"}
    return None
