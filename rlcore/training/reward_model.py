"""Train a Bradley-Terry reward model (or an ensemble of K) with TRL's RewardTrainer.

Layout of ``spec.output_dir``::

    spec.json              the validated spec this run used
    metrics.jsonl          every metric line (also printed on stdout)
    checkpoints/           TRL checkpoints (checkpoints/member-<k>/ for ensembles)
    model/ or model-<k>/   the finished model(s): a Hugging Face directory + rlcore_eval.json
    eval.json              held-out metrics per member and for the ensemble, and ``data``: the rows
                           they rest on (rows in, train/held-out, ties, dropped by reason, the split)

A member's model directory appears (by rename) only when it is complete, and is then announced with
``emit_artifact("reward_model", path, metrics=...)``. With ``resume`` a member whose model exists is
not trained again, and an unfinished one continues from its last checkpoint; a checkpoint that already
reached ``max_steps`` is published as it is (no step past the plan). A stop (SIGTERM, a cancel) that
arrives during a member's last step lets that member finish and publish; the run then exits 143 only
if members are left to train.
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
                                     last_checkpoint, non_finite_loss_message, out_of_memory_message, plan_complete,
                                     publish_directory, resolve_model_source, restore_if_complete, staging_directory)
from rlcore.training.snapshot import held_out_groups, read_preferences, split_held_out
from rlcore.training.specs import RewardModelTrainSpec

EVAL_FILE = "rlcore_eval.json"


def member_name(k: int, ensemble_size: int) -> str:
    """Directory name of member ``k``: ``model`` for a single model, ``model-<k>`` in an ensemble.

    >>> member_name(0, 1), member_name(1, 3)
    ('model', 'model-1')
    """
    return "model" if ensemble_size == 1 else f"model-{k}"


def _tie_count(rows: list[dict[str, Any]]) -> int:
    return sum(1 for r in rows if r.get("tie"))


def load_pairs(spec: RewardModelTrainSpec) -> tuple[list[dict[str, Any]], list[dict[str, Any]], dict[str, Any]]:
    """Checked training and held-out pairs of a spec, and a report of what they rest on.

    Without an eval snapshot, whole groups (``spec.split_by``: comparisons or prompts) are held out by
    ``seed``, so no comparison is both trained on and scored.
    """
    snapshot = read_preferences(spec.preference_snapshot, spec.use_margin)
    rows = snapshot.rows
    report: dict[str, Any] = {"rows_in": len(rows)}
    if spec.eval_snapshot is None:
        groups, note = held_out_groups(snapshot, spec.split_by)
        train, held_out = split_held_out(rows, spec.eval_fraction, spec.seed, source=str(spec.preference_snapshot),
                                         groups=groups)
        held_ids = {id(r) for r in held_out}
        held_groups = {g for g, r in zip(groups, rows) if id(r) in held_ids}
        report["split"] = {"by": spec.split_by, "groups": len(set(groups)), "held_out_groups": len(held_groups),
                           "note": note}
    else:
        held_out = read_preferences(spec.eval_snapshot, spec.use_margin).rows
        train = rows
        if len(train) < 8:
            raise UserError(f"{spec.preference_snapshot}: only {len(train)} preference pairs; at least 8 are needed "
                            "to train a reward model — label more comparisons")
        if len(held_out) < 2:
            raise UserError(f"{spec.eval_snapshot}: only {len(held_out)} held-out pairs; at least 2 are needed")
        report["rows_in"] += len(held_out)
        report["split"] = {"by": "eval_snapshot", "note": f"held-out pairs from {spec.eval_snapshot}"}
    if ("tie" in (train[0] if train else {})) != ("tie" in (held_out[0] if held_out else {})):
        # one side has ties and the other none: give both the column so the datasets share columns
        for row in train + held_out:
            row.setdefault("tie", False)
    report.update(train_rows=len(train), held_out_rows=len(held_out),
                  tie_rows={"train": _tie_count(train), "held_out": _tie_count(held_out)})
    return train, held_out, report


def reward_config(spec: RewardModelTrainSpec, output_dir: Path, seed: int, eos_token: str | None,
                  member: str = "model"):
    """The TRL ``RewardConfig`` of a spec (one ensemble member, named ``member`` in the metric mirrors)."""
    from trl import RewardConfig

    from rlcore.training.mirrors import mirror_arguments

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
        eos_token=eos_token, disable_tqdm=True, **mirror_arguments(spec.report_to, member, spec.output_dir.name),
        **device_arguments(spec))


def reward_trainer_class(label_smoothing: float, ties: bool = False):
    """TRL's RewardTrainer, or a subclass whose Bradley-Terry loss has a target ``t`` per pair.

    With ``x = r_c - r_r - margin`` the loss ``-t log s(x) - (1-t) log s(-x)`` equals TRL's ``-log s(x)``
    plus ``(1-t) x`` (because ``log s(-x) = log s(x) - x``); TRL computes the rest (margins, centering,
    metrics). A win has ``t = 1 - e`` with label smoothing ``e`` (conservative Bradley-Terry); a row with
    ``tie: true`` has ``t = 1/2`` and margin 0, i.e. ``-1/2 log s(d) - 1/2 log s(-d)``, the Bradley-Terry
    tie. TRL's own training ``accuracy`` still counts tie rows; the held-out figures leave them out.
    """
    from trl import RewardTrainer

    if not label_smoothing and not ties:
        return RewardTrainer
    import torch

    class TargetRewardTrainer(RewardTrainer):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            collate = self.data_collator

            def with_ties(examples):
                batch = collate(examples)
                if examples and "tie" in examples[0]:
                    batch["tie"] = torch.tensor([bool(e["tie"]) for e in examples])
                return batch

            self.data_collator = with_ties

        def _set_signature_columns_if_needed(self):
            super()._set_signature_columns_if_needed()
            if "tie" not in self._signature_columns:
                self._signature_columns = [*self._signature_columns, "tie"]

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            tie = inputs.pop("tie", None)
            loss, outputs = super().compute_loss(model, inputs, return_outputs=True,
                                                 num_items_in_batch=num_items_in_batch)
            chosen, rejected = torch.chunk(outputs.logits.squeeze(-1), chunks=2)
            x = chosen - rejected
            if "margin" in inputs:
                x = x - inputs["margin"]
            other_side = torch.full_like(x, label_smoothing)  # 1 - t
            if tie is not None:
                other_side = torch.where(tie.to(x.device), torch.full_like(x, 0.5), other_side)
            loss = loss + (other_side * x).mean()
            return (loss, outputs) if return_outputs else loss

    return TargetRewardTrainer


def held_out_margins(trainer: Any, dataset: Any, batch_size: int) -> tuple[list[float], list[bool]]:
    """``r(chosen) - r(rejected)`` and the tie flag of each prepared (tokenized) held-out pair (TRL's collator)."""
    import torch

    model = trainer.model
    model.eval()
    margins: list[float] = []
    ties = [bool(t) for t in dataset["tie"]] if "tie" in dataset.column_names else [False] * len(dataset)
    rows = dataset.select_columns(["chosen_ids", "rejected_ids"])
    with torch.no_grad(), trainer.autocast_smart_context_manager():
        for start in range(0, len(rows), batch_size):
            batch = trainer.data_collator([rows[i] for i in range(start, min(start + batch_size, len(rows)))])
            batch = {k: v.to(trainer.args.device) for k, v in batch.items()}
            rewards = model(**batch, use_cache=False).logits.squeeze(-1).float()
            chosen, rejected = torch.chunk(rewards, chunks=2)
            margins.extend((chosen - rejected).tolist())
    return margins, ties


def _tokenizer(backbone: str):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(backbone)
    # TRL appends eos to plain-text pairs; encoders such as BERT have [SEP] instead of an eos token.
    eos = tokenizer.eos_token or tokenizer.sep_token
    if tokenizer.pad_token is None:
        tokenizer.pad_token = eos
    return tokenizer, (None if tokenizer.eos_token else eos)


def _emit_metrics(files: Any, step: int, prefix: str, metrics: dict[str, Any]) -> None:
    for name, value in metrics.items():
        if isinstance(value, (int, float)) and not isinstance(value, bool):  # None: nothing to score (all ties)
            files.metric(step, f"{prefix}{name}", value)


def _count_drops(report: dict[str, Any], spec: RewardModelTrainSpec, trainer: Any, files: Any) -> None:
    """Rows kept after TRL's max_length filter, and the drops by reason, into ``report`` (once per run)."""
    if "train_rows_kept" in report:
        return
    too_long = f"longer than max_length={spec.max_length} tokens"
    train_kept, held_kept = len(trainer.train_dataset), len(trainer.eval_dataset)
    report["train_rows_kept"], report["held_out_rows_kept"] = train_kept, held_kept
    report["dropped"] = {f"train: {too_long}": report["train_rows"] - train_kept,
                         f"held out: {too_long}": report["held_out_rows"] - held_kept}
    if trainer.accelerator.is_main_process:
        _emit_metrics(files, 0, "data/", {
            "rows_in": report["rows_in"], "train_rows_kept": train_kept, "held_out_rows_kept": held_kept,
            "dropped_too_long": sum(report["dropped"].values()),
            "tie_rows": report["tie_rows"]["train"] + report["tie_rows"]["held_out"]})
        print(f"rlcore: {report['rows_in']} rows in; training on {train_kept}, holding out {held_kept} "
              f"(split by {report['split']['by']}); dropped {report['dropped']}", file=sys.stderr, flush=True)
        if report["split"].get("note"):
            print(f"rlcore: held-out split: {report['split']['note']}", file=sys.stderr, flush=True)


def train_member(spec: RewardModelTrainSpec, k: int, backbone: str, train_rows: list[dict[str, Any]],
                 held_out_rows: list[dict[str, Any]], files: Any, stop: StopRequest,
                 report: dict[str, Any] | None = None) -> dict[str, Any] | int:
    """Train member ``k``; return its held-out metrics, or an exit code when it was stopped.

    ``report`` (from ``load_pairs``) gets the rows kept and dropped by reason."""
    report = report if report is not None else {"rows_in": len(train_rows) + len(held_out_rows),
                                                "train_rows": len(train_rows), "held_out_rows": len(held_out_rows),
                                                "tie_rows": {"train": _tie_count(train_rows),
                                                             "held_out": _tie_count(held_out_rows)},
                                                "split": {"by": "given"}}
    from datasets import Dataset

    from rlcore.training.mirrors import point_mirrors_at
    from rlcore.training.reporting import EventReporter, detach_console_printer

    ensemble = spec.ensemble_size > 1
    ckpt_dir = spec.output_dir / "checkpoints" / (f"member-{k}" if ensemble else "")
    tokenizer, eos_override = _tokenizer(backbone)
    args = reward_config(spec, ckpt_dir, spec.seed + k, eos_override, member_name(k, spec.ensemble_size))
    point_mirrors_at(spec.output_dir, spec.report_to, member_name(k, spec.ensemble_size) if ensemble else None)
    reporter = EventReporter(files, stop, prefix=f"member-{k}/" if ensemble else "")
    trainer_class = reward_trainer_class(spec.label_smoothing, ties=any(r.get("tie") for r in train_rows))
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
    if len(trainer.eval_dataset) == 0:
        raise UserError(f"max_length: every held-out pair is longer than {spec.max_length} tokens; raise max_length")
    _count_drops(report, spec, trainer, files)
    if ensemble:
        steps = trainer.args.max_steps if trainer.args.max_steps > 0 else None
        if steps:
            reporter.progress_offset, reporter.progress_total = k * steps, spec.ensemble_size * steps
    resume_from = last_checkpoint(ckpt_dir) if spec.resume else None
    try:
        # a checkpoint that already did every step (a stop raced the last one) is published, not trained on
        if not restore_if_complete(trainer, resume_from):
            trainer.train(resume_from_checkpoint=resume_from)
        elif ensemble and trainer.accelerator.is_main_process:
            reporter._progress(trainer.state)  # the member's place in the whole job, after the member-level line
    except Exception as exc:
        if is_out_of_memory(exc):
            raise UserError(out_of_memory_message(spec, "max_length")) from exc
        raise
    if reporter.non_finite_step is not None:
        raise UserError(non_finite_loss_message(spec, reporter.non_finite_step, "the snapshot's margins"))
    if stop.requested and not plan_complete(trainer.state):  # a stop at the last step still finishes the member
        return EXIT_STOPPED
    margins, ties = held_out_margins(trainer, trainer.eval_dataset, spec.per_device_eval_batch_size)
    metrics = pair_metrics(margins, ties)
    final = spec.output_dir / member_name(k, spec.ensemble_size)
    if trainer.accelerator.is_main_process:
        staging = staging_directory(final)
        trainer.save_model(str(staging))
        (staging / EVAL_FILE).write_text(json.dumps({"metrics": metrics, "margins": margins, "ties": ties,
                                                     "data": report, "seed": spec.seed + k,
                                                     "step": trainer.state.global_step}, indent=1))
        publish_directory(staging, final)
        step = trainer.state.global_step
        _emit_metrics(files, step, f"{reporter.prefix}eval_", metrics)
        emit_artifact("reward_model", str(final), metrics=metrics, data=report, member=k, step=step)
    trainer.accelerator.wait_for_everyone()
    return {"metrics": metrics, "margins": margins, "ties": ties, "data": report}


def train_reward_model(spec: RewardModelTrainSpec) -> int:
    """Run a reward-model spec end to end; return the process exit code (0, or 143 when stopped)."""
    from rlcore.training.reporting import RunFiles

    backbone = resolve_model_source(spec.backbone, "backbone")
    train_rows, held_out_rows, report = load_pairs(spec)
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
            if stop.requested:  # the previous member finished as the stop came; start no new one
                return EXIT_STOPPED
            result = train_member(spec, k, backbone, train_rows, held_out_rows, files, stop, report)
            if isinstance(result, int):
                return result
            members.append(result)
        summary: dict[str, Any] = {f"member-{k}": m["metrics"] for k, m in enumerate(members)}
        summary["data"] = report if "train_rows_kept" in report else members[0].get("data", report)
        if spec.ensemble_size > 1:
            margins = ensemble_margins([m["margins"] for m in members])
            combined = pair_metrics(margins, members[0].get("ties") or [False] * len(margins))
            summary["ensemble"] = combined
            _emit_metrics(files, 0, "ensemble/eval_", combined)
            emit_artifact("reward_model_ensemble", str(spec.output_dir), metrics=combined, data=summary["data"],
                          members=[str(spec.output_dir / member_name(k, spec.ensemble_size))
                                   for k in range(spec.ensemble_size)])
        (spec.output_dir / "eval.json").write_text(json.dumps(summary, indent=1))
        return 0
    finally:
        stop.uninstall()
        files.close()
