"""The TrainerCallback that reports a TRL run to its launcher (``rlcore.events``) and to files.

Every number TRL logs becomes a metric line under the name TRL gives it (``loss``, ``accuracy``,
``reward``, ``rewards/<component>/mean``, ``kl``, ``clip_ratio/...``), on stdout and appended to
``<output_dir>/metrics.jsonl``; each optimizer step is a progress line; for GRPO, every ``sample_every``
steps a few completions of the latest generation batch become sample lines (and ``samples.jsonl``)
with their per-component rewards and advantage. The callback also watches for a non-finite loss and
for a stop request (SIGTERM), and turns either into a clean stop of the trainer.

Imports transformers: import this module inside a training function only.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import IO, Any

from transformers import TrainerCallback

from rlcore.events import emit_metric, emit_progress, emit_sample
from rlcore.training.runtime import StopRequest


class RunFiles:
    """``metrics.jsonl`` and ``samples.jsonl`` of a run, appended to (so a resumed run continues them)."""

    def __init__(self, output_dir: Path) -> None:
        output_dir.mkdir(parents=True, exist_ok=True)
        self.output_dir = output_dir
        self.metrics: IO[str] = (output_dir / "metrics.jsonl").open("a", encoding="utf-8")
        self.samples: IO[str] | None = None  # opened on the first sample: reward-model runs have none

    def metric(self, step: int, name: str, value: float, **extra: Any) -> None:
        emit_metric(step, name, value, **extra)
        emit_metric(step, name, value, stream=self.metrics, **extra)

    def sample(self, step: int, **record: Any) -> None:
        if self.samples is None:
            self.samples = (self.output_dir / "samples.jsonl").open("a", encoding="utf-8")
        emit_sample(step, **record)
        emit_sample(step, stream=self.samples, **record)

    def close(self) -> None:
        self.metrics.close()
        if self.samples is not None:
            self.samples.close()


def numeric_logs(logs: dict[str, Any]) -> dict[str, float]:
    """The numeric entries of a TRL log dict (TRL logs None for a metric with no valid value).

    >>> numeric_logs({"loss": 0.5, "epoch": 1, "rewards/x/mean": None, "note": "hi", "flag": True})
    {'loss': 0.5, 'epoch': 1.0}
    """
    return {k: float(v) for k, v in logs.items()
            if isinstance(v, (int, float)) and not isinstance(v, bool)}


class EventReporter(TrainerCallback):
    """Streams a run's logs, progress and samples; stops cleanly on NaN loss or a stop request.

    ``prefix`` is put before every metric name (``member-1/`` for ensemble members); ``progress_offset``
    and ``progress_total`` place this trainer's steps inside a longer job (several members).
    """

    def __init__(self, files: RunFiles, stop: StopRequest, *, prefix: str = "", progress_offset: int = 0,
                 progress_total: int | None = None, sample_every: int | None = None,
                 samples_per_report: int = 4) -> None:
        self.files, self.stop, self.prefix = files, stop, prefix
        self.progress_offset, self.progress_total = progress_offset, progress_total
        self.sample_every, self.samples_per_report = sample_every, samples_per_report
        self.trainer: Any = None  # set by the run for GRPO sample reporting
        self.non_finite_step: int | None = None
        self.stopped_at: int | None = None

    def _progress(self, state: Any) -> None:
        total = self.progress_total or state.max_steps
        emit_progress(self.progress_offset + state.global_step, total)

    def on_train_begin(self, args, state, control, **kwargs):
        if state.is_world_process_zero:
            self._progress(state)
        if self.stop.requested:
            control.should_training_stop = True
        return control

    def on_step_end(self, args, state, control, **kwargs):
        if state.is_world_process_zero:
            self._progress(state)
            if self.sample_every and state.global_step % self.sample_every == 0:
                self.report_samples(state.global_step)
        if self.stop.requested:
            control.should_save = True
            control.should_training_stop = True
            self.stopped_at = state.global_step
        return control

    def on_log(self, args, state, control, logs=None, **kwargs):
        values = numeric_logs(logs or {})
        if state.is_world_process_zero:
            for name, value in values.items():
                self.files.metric(state.global_step, self.prefix + name, value)
        if any(not math.isfinite(values[k]) for k in ("loss", "grad_norm") if k in values):
            self.non_finite_step = state.global_step
            control.should_training_stop = True
            control.should_save = False  # never checkpoint diverged weights
        return control

    def report_samples(self, step: int) -> None:
        """Sample lines for the first completions of the trainer's latest generation batch (GRPO)."""
        logs = getattr(self.trainer, "_logs", None)
        if not logs or not logs.get("completion"):
            return
        weights = [float(w) for w in self.trainer.reward_weights.tolist()]
        names = list(self.trainer.reward_func_names)
        for i in range(min(self.samples_per_report, len(logs["completion"]))):
            rewards = {name: _finite_or_none(logs["rewards"][name][i]) for name in names}
            total = sum(w * r for w, r in zip(weights, rewards.values(), strict=True) if r is not None)
            self.files.sample(step, prompt=logs["prompt"][i], completion=logs["completion"][i], rewards=rewards,
                              reward=total, advantage=_finite_or_none(logs["advantages"][i]))


def _finite_or_none(value: float) -> float | None:
    value = float(value)
    return value if math.isfinite(value) else None


def detach_console_printer(trainer: Any) -> None:
    """Remove transformers' stdout log printer: its lines would duplicate ours as untyped log text."""
    from transformers.trainer_callback import PrinterCallback, ProgressCallback

    trainer.remove_callback(PrinterCallback)
    trainer.remove_callback(ProgressCallback)
