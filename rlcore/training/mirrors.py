"""Metric mirrors: a run's ``report_to`` trackers, written under the run's own folder.

TRL hands ``report_to`` to transformers' callbacks, which pick their folders from the environment
(``TENSORBOARD_LOGGING_DIR``, ``TRACKIO_DIR``, ``WANDB_DIR``); left alone they would write into the
checkpoints folder and the user's home. Our own ``metrics.jsonl`` and the live dashboard do not depend
on any of them.

>>> mirror_arguments([], "model")
{'report_to': 'none'}
>>> mirror_arguments(["tensorboard"], "model")["report_to"]
['tensorboard']
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

TENSORBOARD_DIR = "tensorboard"
TRACKIO_DIR = "trackio"
WANDB_DIR = "wandb"


def tensorboard_dir(output_dir: str | Path, member: str | None = None) -> Path:
    """Where a run's (or one ensemble member's) TensorBoard event files go.

    >>> str(tensorboard_dir("runs/rm1")), str(tensorboard_dir("runs/rm1", "model-1"))
    ('runs/rm1/tensorboard', 'runs/rm1/tensorboard/model-1')
    """
    folder = Path(output_dir) / TENSORBOARD_DIR
    return folder / member if member else folder


def mirror_arguments(report_to: list[str], run_name: str, project: str = "rlcore") -> dict[str, Any]:
    """``TrainingArguments`` fields for a spec's ``report_to``: the trackers, the run and project names."""
    if not report_to:
        return {"report_to": "none"}
    # trackio_static_space_id=False: a local run never creates or freezes a Hugging Face Space.
    return {"report_to": list(report_to), "run_name": run_name, "project": project,
            "trackio_static_space_id": False}


def point_mirrors_at(output_dir: str | Path, report_to: list[str], member: str | None = None) -> None:
    """Send the trackers' files under ``output_dir``; call before the trainer is built (its callbacks read
    the folders then). The training child is a process of its own, so setting its environment is local."""
    output_dir = Path(output_dir).resolve()
    if "tensorboard" in report_to:
        os.environ["TENSORBOARD_LOGGING_DIR"] = str(tensorboard_dir(output_dir, member))
    if "trackio" in report_to:
        # trackio reads TRACKIO_DIR once, when first imported; every member of a run shares one project folder
        os.environ["TRACKIO_DIR"] = str(output_dir / TRACKIO_DIR)
    if "wandb" in report_to:
        os.environ.setdefault("WANDB_DIR", str(output_dir / WANDB_DIR))
        (output_dir / WANDB_DIR).mkdir(parents=True, exist_ok=True)
