"""What every training run needs around TRL: device defaults, model lookup, stopping, saving, OOM.

- ``resolve_device``: "auto" means a GPU in bf16 with gradient checkpointing when one is visible, and
  fp32 without checkpointing on CPU (TRL's bf16 + checkpointing defaults are 12-25x slower there).
- ``resolve_model_source``: a local model directory or a Hub id; anything else is a UserError.
- ``StopRequest``: SIGTERM sets a flag; the reporting callback then checkpoints and stops the trainer.
- ``publish_directory``: a finished model is written to a temporary directory and renamed into place,
  so a half-written model never exists under its final name.
- ``is_out_of_memory`` / ``out_of_memory_message``: turn an OOM into advice; ``non_finite_loss_message``
  does so for a loss that became NaN/inf.
- ``is_non_finite_sampling`` / ``non_finite_sampling_message``: likewise for NaN/inf while generating.

>>> resolve_device("auto", "auto", None, cuda_available=False, bf16_supported=False)
{'use_cpu': True, 'bf16': False, 'fp16': False, 'gradient_checkpointing': False}
>>> resolve_device("auto", "auto", None, cuda_available=True, bf16_supported=True)
{'use_cpu': False, 'bf16': True, 'fp16': False, 'gradient_checkpointing': True}
"""

from __future__ import annotations

import os
import shutil
import signal
import sys
from pathlib import Path
from typing import Any

from rlcore.errors import UserError

EXIT_STOPPED = 143  # 128 + SIGTERM: the run was asked to stop and saved a checkpoint


def resolve_device(device: str, precision: str, gradient_checkpointing: bool | None, *,
                   cuda_available: bool, bf16_supported: bool) -> dict[str, Any]:
    """TrainingArguments device fields for a spec's ``device``/``precision``/``gradient_checkpointing``.

    >>> resolve_device("cuda", "auto", None, cuda_available=False, bf16_supported=False)
    Traceback (most recent call last):
    ...
    rlcore.errors.UserError: device: 'cuda' was requested but no GPU is visible to this process; use 'auto' or 'cpu'
    >>> resolve_device("cpu", "auto", True, cuda_available=True, bf16_supported=True)["gradient_checkpointing"]
    True
    """
    if device == "cuda" and not cuda_available:
        raise UserError("device: 'cuda' was requested but no GPU is visible to this process; use 'auto' or 'cpu'")
    on_gpu = cuda_available and device != "cpu"
    if precision == "auto":
        precision = "bf16" if on_gpu and bf16_supported else "fp32"
    if precision == "bf16" and on_gpu and not bf16_supported:
        raise UserError("precision: this GPU does not support bf16; use 'fp16' or 'auto'")
    return {
        "use_cpu": not on_gpu,
        "bf16": precision == "bf16",
        "fp16": precision == "fp16",
        "gradient_checkpointing": on_gpu if gradient_checkpointing is None else gradient_checkpointing,
    }


def device_arguments(spec: Any) -> dict[str, Any]:
    """``resolve_device`` for a spec on this machine."""
    import torch

    cuda = torch.cuda.is_available()
    return resolve_device(spec.device, spec.precision, spec.gradient_checkpointing, cuda_available=cuda,
                          bf16_supported=cuda and torch.cuda.is_bf16_supported())


def looks_like_local_path(name: str) -> bool:
    """Whether ``name`` can only be a filesystem path (a Hub id is ``name`` or ``owner/name``).

    >>> looks_like_local_path("Qwen/Qwen2.5-0.5B"), looks_like_local_path("./models/rm"), looks_like_local_path("/m")
    (False, True, True)
    >>> looks_like_local_path("runs/42/model")
    True
    """
    return name.startswith(("/", ".", "~")) or name.count("/") > 1 or "\\" in name


def resolve_model_source(name: str, field: str) -> str:
    """A model directory path or a Hub id that resolves to a config; otherwise a UserError naming ``field``."""
    path = Path(name).expanduser()
    if path.exists():
        if not (path / "config.json").is_file():
            raise UserError(f"{field}: {name} exists but holds no config.json; point it at a saved Hugging Face "
                            "model directory")
        return str(path)
    if looks_like_local_path(name) or not name.strip():
        raise UserError(f"{field}: model directory {name!r} does not exist")
    from transformers import AutoConfig

    try:
        AutoConfig.from_pretrained(name)
    except Exception as exc:  # OSError, HTTP and offline errors all mean "cannot get it"
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UserError(
            f"{field}: {name!r} is neither a local model directory nor a Hugging Face Hub model that could be "
            f"reached ({reason[:200]}). Give the path of a saved model directory, or check the id; this machine "
            "may have no network access to the Hub") from exc
    return name


def last_checkpoint(directory: str | Path) -> str | None:
    """The newest ``checkpoint-<step>`` in ``directory`` that transformers can resume from, or None."""
    directory = Path(directory)
    if not directory.is_dir():
        return None
    from transformers.trainer_utils import get_last_checkpoint

    return get_last_checkpoint(str(directory))


def plan_complete(state: Any) -> bool:
    """Whether a trainer state (``transformers.TrainerState``) has done every step of its plan."""
    return state.max_steps > 0 and state.global_step >= state.max_steps


def restore_if_complete(trainer: Any, checkpoint: str | None) -> bool:
    """If ``checkpoint`` already finished the plan (a stop or cancel raced the last step), load its weights
    and state into ``trainer`` and return True: the caller publishes instead of training. Resuming such a
    checkpoint through ``trainer.train`` would run one step past ``max_steps``."""
    if checkpoint is None:
        return False
    from transformers import TrainerState

    from rlcore.events import emit_progress

    state = TrainerState.load_from_json(str(Path(checkpoint) / "trainer_state.json"))
    if not plan_complete(state):
        return False
    trainer._load_from_checkpoint(checkpoint)  # what Trainer.train does first on resume
    trainer.state = state
    print(f"rlcore: {Path(checkpoint).name} already completed all {state.max_steps} steps; publishing it "
          "without training further", file=sys.stderr, flush=True)
    emit_progress(state.global_step, state.max_steps)
    return True


def has_resume_point(output_dir: str | Path) -> bool:
    """Whether a run's output directory holds something ``--resume`` continues from: a saved
    ``checkpoint-<step>`` (``checkpoints/`` or ``checkpoints/member-<k>/``) or a finished ensemble member.
    Cheap (no transformers import): the webapp asks it to decide whether to offer "Resume".

    >>> import tempfile
    >>> run = Path(tempfile.mkdtemp())
    >>> has_resume_point(run), has_resume_point(run / "missing")
    (False, False)
    >>> (run / "checkpoints" / "member-1" / "checkpoint-4").mkdir(parents=True); has_resume_point(run)
    True
    """
    run = Path(output_dir)
    checkpoints = run / "checkpoints"
    if any(checkpoints.glob("checkpoint-*/")) or any(checkpoints.glob("member-*/checkpoint-*/")):
        return True
    return any(run.glob("model-*/rlcore_eval.json"))


class StopRequest:
    """Set by SIGTERM (or ``request()``); the reporting callback then saves a checkpoint and stops."""

    def __init__(self) -> None:
        self.requested = False
        self._previous: Any = None
        self._parent = os.getppid()

    def request(self, *_: Any) -> None:
        self.requested = True
        if os.getppid() != self._parent:
            # Our launcher died (the worker, which asked the kernel for this SIGTERM with PR_SET_PDEATHSIG):
            # nobody reads our stdout any more, and the next metric line would raise BrokenPipeError and
            # kill the run before its checkpoint. Write into the void instead and save the checkpoint.
            _detach_output()
        try:
            print("rlcore: stop requested; saving a checkpoint and exiting", file=sys.stderr, flush=True)
        except OSError:
            _detach_output()

    def install(self) -> StopRequest:
        self._parent = os.getppid()
        self._previous = signal.signal(signal.SIGTERM, self.request)
        return self

    def uninstall(self) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGTERM, self._previous)
            self._previous = None


def _detach_output() -> None:
    """Point stdout and stderr at /dev/null (their reader is gone)."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    for fd in (1, 2):
        os.dup2(devnull, fd)
    os.close(devnull)


def staging_directory(final: Path) -> Path:
    """A fresh temporary sibling of ``final`` to write a model into before ``publish_directory``."""
    staging = final.parent / f".{final.name}.partial-{os.getpid()}"
    if staging.exists():
        shutil.rmtree(staging)
    return staging


def publish_directory(staging: Path, final: Path) -> Path:
    """Atomically rename a fully written ``staging`` directory to ``final``, replacing an older one.

    >>> import tempfile
    >>> root = Path(tempfile.mkdtemp())
    >>> (root / "tmp").mkdir(); _ = (root / "tmp" / "config.json").write_text("{}")
    >>> publish_directory(root / "tmp", root / "model").name, (root / "model" / "config.json").exists()
    ('model', True)
    """
    if final.exists():
        old = final.parent / f".{final.name}.old-{os.getpid()}"
        os.replace(final, old)
        os.replace(staging, final)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(staging, final)
    return final


def is_out_of_memory(exc: BaseException) -> bool:
    """Whether ``exc`` is a GPU or host allocation failure.

    >>> is_out_of_memory(RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB"))
    True
    >>> is_out_of_memory(RuntimeError("shape mismatch"))
    False
    """
    try:
        import torch

        if isinstance(exc, torch.OutOfMemoryError):
            return True
    except ImportError:  # pragma: no cover
        pass
    if isinstance(exc, MemoryError):
        return True
    text = str(exc).lower()
    return isinstance(exc, RuntimeError) and ("out of memory" in text or "can't allocate memory" in text)


def is_non_finite_sampling(exc: BaseException) -> bool:
    """Whether generation failed because the next-token probabilities held NaN/inf.

    On CPU torch says so; on CUDA the sampling kernel's assert only prints it, and the exception
    is a generic device-side assert.

    >>> is_non_finite_sampling(RuntimeError("probability tensor contains either `inf`, `nan` or element < 0"))
    True
    >>> is_non_finite_sampling(RuntimeError("CUDA error: device-side assert triggered"))
    True
    >>> is_non_finite_sampling(ValueError("probability tensor contains either"))
    False
    """
    text = str(exc)
    return isinstance(exc, RuntimeError) and ("probability tensor contains either" in text
                                              or "device-side assert triggered" in text)


def non_finite_sampling_message(spec: Any) -> str:
    """What to change when the policy's next-token probabilities turned NaN/inf while generating."""
    return ("generation failed: the policy's next-token probabilities held NaN/inf, so no token could be "
            "sampled. The policy's weights or logits overflowed: lower learning_rate (now "
            f"{spec.learning_rate}), set precision to fp32 (now {spec.precision}) or check the policy "
            "checkpoint for NaN weights. On a GPU this shows as a CUDA 'device-side assert'; that assert also "
            "fires when the tokenizer has more tokens than the model's vocabulary (a mismatched pair).")


def out_of_memory_message(spec: Any, length_field: str) -> str:
    """What to change after an OOM, with the spec's current values."""
    batch = spec.per_device_train_batch_size
    length = getattr(spec, length_field)
    advice = [f"lower per_device_train_batch_size (now {batch}) and raise gradient_accumulation_steps "
              f"(now {spec.gradient_accumulation_steps}) to keep the effective batch",
              f"lower {length_field} (now {length})"]
    if not spec.gradient_checkpointing:
        advice.append("set gradient_checkpointing to true")
    return "out of memory during training: " + "; or ".join(advice)


def non_finite_loss_message(spec: Any, step: int, check: str | None = None) -> str:
    """What to change after the loss became NaN/inf at ``step``; ``check``: what else may hold the NaN.

    >>> from types import SimpleNamespace
    >>> non_finite_loss_message(SimpleNamespace(learning_rate=1e-05), 12, "the reward for NaN values")
    'loss became NaN/inf at step 12; lower learning_rate (now 1e-05) or check the reward for NaN values'
    """
    return (f"loss became NaN/inf at step {step}; lower learning_rate (now {spec.learning_rate})"
            + (f" or check {check}" if check else ""))
