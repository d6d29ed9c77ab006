"""Train a Bradley-Terry reward model (or an ensemble of K) with TRL's RewardTrainer.

Layout of ``spec.output_dir``::

    spec.json              the validated spec this run used
    metrics.jsonl          every metric line (also printed on stdout)
    checkpoints/           TRL checkpoints (checkpoints/member-<k>/ for ensembles)
    model/ or model-<k>/   the finished model(s): a Hugging Face directory + rlcore_eval.json
    eval.json              held-out metrics per member and for the ensemble

A member's model directory appears (by rename) only when it is complete, and is then announced with
``emit_artifact("reward_model", path, metrics=...)``. With ``resume`` a member whose model exists is
not trained again, and an unfinished one continues from its last checkpoint.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from rlcore.errors import UserError
from rlcore.events import emit_artifact
from rlcore.training.calibration import ensemble_margins, pair_metrics
from rlcore.training.runtime import (EXIT_STOPPED, StopRequest, device_arguments, is_out_of_memory,
                                     last_checkpoint, out_of_memory_message, publish_directory,
                                     resolve_model_source, staging_directory)
from rlcore.training.snapshot import preference_rows, split_held_out
from rlcore.training.specs import RewardModelTrainSpec

EVAL_FILE = "rlcore_eval.json"


def member_name(k: int, ensemble_size: int) -> str:
    """Directory name of member ``k``: ``model`` for a single model, ``model-<k>`` in an ensemble.

    >>> member_name(0, 1), member_name(1, 3)
    ('model', 'model-1')
    """
    return "model" if ensemble_size == 1 else f"model-{k}"


def load_pairs(spec: RewardModelTrainSpec) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Checked training and held-out pairs of a spec (split by ``seed`` unless an eval snapshot is given)."""
    rows = preference_rows(spec.preference_snapshot, spec.use_margin)
    if spec.eval_snapshot is None:
        return split_held_out(rows, spec.eval_fraction, spec.seed, source=str(spec.preference_snapshot))
    held_out = preference_rows(spec.eval_snapshot, spec.use_margin)
    if len(rows) < 8:
        raise UserError(f"{spec.preference_snapshot}: only {len(rows)} preference pairs; at least 8 are needed "
                        "to train a reward model — label more comparisons")
    if len(held_out) < 2:
        raise UserError(f"{spec.eval_snapshot}: only {len(held_out)} held-out pairs; at least 2 are needed")
    return rows, held_out


def reward_config(spec: RewardModelTrainSpec, output_dir: Path, seed: int, eos_token: str | None):
    """The TRL ``RewardConfig`` of a spec (one ensemble member)."""
    from trl import RewardConfig

    return RewardConfig(
        output_dir=str(output_dir), seed=seed, max_steps=spec.max_steps or -1,
        num_train_epochs=spec.num_train_epochs, learning_rate=spec.learning_rate,
        lr_scheduler_type=spec.lr_scheduler_type, warmup_steps=spec.warmup_steps, weight_decay=spec.weight_decay,
        max_grad_norm=spec.max_grad_norm, per_device_train_batch_size=spec.per_device_train_batch_size,
        per_device_eval_batch_size=spec.per_device_eval_batch_size,
        gradient_accumulation_steps=spec.gradient_accumulation_steps, logging_steps=spec.logging_steps,
        save_strategy="steps", save_steps=spec.save_steps, save_total_limit=spec.save_total_limit,
        eval_strategy="steps" if spec.eval_steps else "no", eval_steps=spec.eval_steps,
        max_length=spec.max_length, center_rewards_coefficient=spec.center_rewards_coefficient,
        eos_token=eos_token, report_to="none", disable_tqdm=True, **device_arguments(spec))


def reward_trainer_class(label_smoothing: float):
    """TRL's RewardTrainer, or a subclass adding conservative (label-smoothed) Bradley-Terry loss.

    With smoothing ``e`` the loss is ``-(1-e) log s(x) - e log s(-x)`` for ``x = r_c - r_r - margin``,
    which equals TRL's ``-log s(x)`` plus ``e * x``; TRL computes the rest (margins, centering, metrics).
    """
    from trl import RewardTrainer

    if not label_smoothing:
        return RewardTrainer
    import torch

    class SmoothedRewardTrainer(RewardTrainer):
        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            loss, outputs = super().compute_loss(model, inputs, return_outputs=True,
                                                 num_items_in_batch=num_items_in_batch)
            chosen, rejected = torch.chunk(outputs.logits.squeeze(-1), chunks=2)
            x = chosen - rejected
            if "margin" in inputs:
                x = x - inputs["margin"]
            loss = loss + label_smoothing * x.mean()
            return (loss, outputs) if return_outputs else loss

    return SmoothedRewardTrainer


def held_out_margins(trainer: Any, dataset: Any, batch_size: int) -> list[float]:
    """``r(chosen) - r(rejected)`` for each prepared (tokenized) held-out pair, using TRL's collator."""
    import torch

    model = trainer.model
    model.eval()
    margins: list[float] = []
    rows = dataset.select_columns(["chosen_ids", "rejected_ids"])
    with torch.no_grad(), trainer.autocast_smart_context_manager():
        for start in range(0, len(rows), batch_size):
            batch = trainer.data_collator([rows[i] for i in range(start, min(start + batch_size, len(rows)))])
            batch = {k: v.to(trainer.args.device) for k, v in batch.items()}
            rewards = model(**batch, use_cache=False).logits.squeeze(-1).float()
            chosen, rejected = torch.chunk(rewards, chunks=2)
            margins.extend((chosen - rejected).tolist())
    return margins


def _tokenizer(backbone: str):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(backbone)
    # TRL appends eos to plain-text pairs; encoders such as BERT have [SEP] instead of an eos token.
    eos = tokenizer.eos_token or tokenizer.sep_token
    if tokenizer.pad_token is None:
        tokenizer.pad_token = eos
    return tokenizer, (None if tokenizer.eos_token else eos)


def train_member(spec: RewardModelTrainSpec, k: int, backbone: str, train_rows: list[dict[str, Any]],
                 held_out_rows: list[dict[str, Any]], files: Any, stop: StopRequest) -> dict[str, Any] | int:
    """Train member ``k``; return its held-out metrics, or an exit code when it was stopped."""
    from datasets import Dataset

    from rlcore.training.reporting import EventReporter, detach_console_printer

    ensemble = spec.ensemble_size > 1
    ckpt_dir = spec.output_dir / "checkpoints" / (f"member-{k}" if ensemble else "")
    tokenizer, eos_override = _tokenizer(backbone)
    args = reward_config(spec, ckpt_dir, spec.seed + k, eos_override)
    reporter = EventReporter(files, stop, prefix=f"member-{k}/" if ensemble else "")
    trainer_class = reward_trainer_class(spec.label_smoothing)
    try:
        trainer = trainer_class(model=backbone, args=args, train_dataset=Dataset.from_list(train_rows),
                                eval_dataset=Dataset.from_list(held_out_rows), processing_class=tokenizer,
                                callbacks=[reporter])
    except ValueError as exc:
        raise UserError(f"backbone: {backbone} cannot be trained as a reward model: {exc}") from exc
    detach_console_printer(trainer)
    kept = len(trainer.train_dataset)
    if kept == 0:
        raise UserError(f"max_length: every training pair is longer than {spec.max_length} tokens; raise max_length")
    if kept < len(train_rows):
        print(f"rlcore: dropped {len(train_rows) - kept} training pairs longer than max_length={spec.max_length}",
              file=sys.stderr, flush=True)
    if len(trainer.eval_dataset) == 0:
        raise UserError(f"max_length: every held-out pair is longer than {spec.max_length} tokens; raise max_length")
    if ensemble:
        steps = trainer.args.max_steps if trainer.args.max_steps > 0 else None
        if steps:
            reporter.progress_offset, reporter.progress_total = k * steps, spec.ensemble_size * steps
    resume_from = last_checkpoint(ckpt_dir) if spec.resume else None
    try:
        trainer.train(resume_from_checkpoint=resume_from)
    except Exception as exc:
        if is_out_of_memory(exc):
            raise UserError(out_of_memory_message(spec, "max_length")) from exc
        raise
    if reporter.non_finite_step is not None:
        raise UserError(f"loss became NaN/inf at step {reporter.non_finite_step}; lower learning_rate "
                        f"(now {spec.learning_rate}) or check the snapshot's margins")
    if stop.requested:
        return EXIT_STOPPED
    margins = held_out_margins(trainer, trainer.eval_dataset, spec.per_device_eval_batch_size)
    metrics = pair_metrics(margins)
    final = spec.output_dir / member_name(k, spec.ensemble_size)
    if trainer.accelerator.is_main_process:
        staging = staging_directory(final)
        trainer.save_model(str(staging))
        (staging / EVAL_FILE).write_text(json.dumps({"metrics": metrics, "margins": margins, "seed": spec.seed + k,
                                                     "step": trainer.state.global_step}, indent=1))
        publish_directory(staging, final)
        step = trainer.state.global_step
        for name, value in metrics.items():
            files.metric(step, f"{reporter.prefix}eval_{name}", value)
        emit_artifact("reward_model", str(final), metrics=metrics, member=k, step=step)
    trainer.accelerator.wait_for_everyone()
    return {"metrics": metrics, "margins": margins}


def train_reward_model(spec: RewardModelTrainSpec) -> int:
    """Run a reward-model spec end to end; return the process exit code (0, or 143 when stopped)."""
    from rlcore.training.reporting import RunFiles

    backbone = resolve_model_source(spec.backbone, "backbone")
    train_rows, held_out_rows = load_pairs(spec)
    import datasets

    datasets.disable_progress_bars()
    spec.output_dir.mkdir(parents=True, exist_ok=True)
    (spec.output_dir / "spec.json").write_text(spec.model_dump_json(indent=1))
    files = RunFiles(spec.output_dir)
    stop = StopRequest().install()
    members: list[dict[str, Any]] = []
    try:
        for k in range(spec.ensemble_size):
            done = spec.output_dir / member_name(k, spec.ensemble_size) / EVAL_FILE
            if spec.resume and done.is_file():
                members.append(json.loads(done.read_text()))
                continue
            result = train_member(spec, k, backbone, train_rows, held_out_rows, files, stop)
            if isinstance(result, int):
                return result
            members.append(result)
        summary: dict[str, Any] = {f"member-{k}": m["metrics"] for k, m in enumerate(members)}
        if spec.ensemble_size > 1:
            combined = pair_metrics(ensemble_margins([m["margins"] for m in members]))
            summary["ensemble"] = combined
            for name, value in combined.items():
                files.metric(0, f"ensemble/eval_{name}", value)
            emit_artifact("reward_model_ensemble", str(spec.output_dir), metrics=combined,
                          members=[str(spec.output_dir / member_name(k, spec.ensemble_size))
                                   for k in range(spec.ensemble_size)])
        (spec.output_dir / "eval.json").write_text(json.dumps(summary, indent=1))
        return 0
    finally:
        stop.uninstall()
        files.close()
