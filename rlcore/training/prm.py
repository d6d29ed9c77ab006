"""Train a process reward model (PRM): token classification at the step separators.

TRL 1.16 no longer ships ``PRMTrainer``; this follows the formulation its ``tokenize_row`` used
(trl/trainer/prm_trainer.py, TRL <= 0.2x): the prompt's tokens (after ``bos`` when the tokenizer has
one), then each step's tokens followed by the ``step_separator``'s tokens; the step's label (1 good,
0 bad) sits on the separator's last token and every other position is ``-100`` (ignored by the
cross-entropy). Training is plain transformers ``Trainer`` on ``AutoModelForTokenClassification``
with two labels; at inference the probability of label 1 at each separator is the step's score.

Layout of ``spec.output_dir``::

    spec.json          the validated spec
    metrics.jsonl      every metric line (also printed on stdout)
    checkpoints/       Trainer checkpoints
    model/             the finished model: a Hugging Face directory that
                       ``AutoModelForTokenClassification.from_pretrained`` loads unchanged, plus
                       rlcore_prm.json (step_separator, held-out metrics and the data they rest on)
    eval.json          held-out metrics: per-step accuracy and first-error accuracy (Wilson intervals),
                       and ``data``: rows in, train / held out, dropped by reason, the split

The held-out split is by response: every row of one response (``response_id``, else prompt + steps —
several annotators' labels of one response) lands on one side only.
"""

from __future__ import annotations

import json
import sys
from itertools import chain
from pathlib import Path
from typing import Any

from rlcore.errors import UserError
from rlcore.events import emit_artifact
from rlcore.steps import StepwiseRow, read_stepwise_row
from rlcore.training.calibration import wilson_interval
from rlcore.training.runtime import (EXIT_STOPPED, StopRequest, device_arguments, is_out_of_memory, last_checkpoint,
                                     non_finite_loss_message, out_of_memory_message, plan_complete, publish_directory,
                                     resolve_model_source, staging_directory)
from rlcore.training.snapshot import read_records, split_held_out
from rlcore.training.specs import PRMTrainSpec

PRM_FILE = "rlcore_prm.json"
ID2LABEL = {0: "bad", 1: "good"}


def first_error(good: list[bool]) -> int | None:
    """Index of the first step judged bad, or ``None`` when all are good.

    >>> first_error([True, True, False, True]), first_error([True, True])
    (2, None)
    """
    return next((i for i, ok in enumerate(good) if not ok), None)


def step_metrics(predicted: list[list[bool]], truth: list[list[bool]]) -> dict[str, Any]:
    """Per-step accuracy and first-error accuracy (the first bad step, or none, predicted exactly),
    each with its count and Wilson 95 % interval.

    >>> m = step_metrics([[True, False], [True, True]], [[True, False], [False, True]])
    >>> m["step_accuracy"], m["n_steps"], m["first_error_accuracy"], m["n_responses"]
    (0.75, 4, 0.5, 2)
    """
    pairs = [(p, t) for ps, ts in zip(predicted, truth, strict=True) for p, t in zip(ps, ts, strict=True)]
    step_right = sum(p == t for p, t in pairs)
    first_right = sum(first_error(p) == first_error(t) for p, t in zip(predicted, truth))
    n_steps, n_responses = len(pairs), len(truth)
    return {"step_accuracy": step_right / n_steps, "step_accuracy_interval": list(wilson_interval(step_right, n_steps)),
            "n_steps": n_steps,
            "first_error_accuracy": first_right / n_responses,
            "first_error_accuracy_interval": list(wilson_interval(first_right, n_responses)),
            "n_responses": n_responses,
            "bad_step_share": sum(not t for _, t in pairs) / n_steps}


def separator_ids(tokenizer: Any, separator: str, *, add: bool, backbone: str) -> tuple[list[int], bool]:
    """Token ids of the separator and whether it had to be added; a tokenizer that cannot encode it
    (no tokens, an unknown token, or tokens that do not decode back to it) is refused unless ``add``."""
    ids = tokenizer.encode(separator, add_special_tokens=False)
    unknown = tokenizer.unk_token_id is not None and tokenizer.unk_token_id in ids
    if ids and not unknown and tokenizer.decode(ids) == separator:
        return ids, False
    if not add:
        raise UserError(f"step_separator: the tokenizer of {backbone} has no token for {separator!r} (it encodes to "
                        f"{ids}); set add_separator_token: true to add it as a special token, or choose a separator "
                        "the tokenizer knows (e.g. '\\n')")
    tokenizer.add_special_tokens({"additional_special_tokens": [separator]})
    return tokenizer.encode(separator, add_special_tokens=False), True


def tokenize_row(row: StepwiseRow, tokenizer: Any, sep_ids: list[int], train_on_last_step_only: bool = False
                 ) -> dict[str, list[int]]:
    """TRL's PRM tokenisation of one row (see the module docstring): ``input_ids`` and ``labels``."""
    prompt_ids = tokenizer(row.prompt, add_special_tokens=False)["input_ids"]
    if tokenizer.bos_token_id is not None:
        prompt_ids = [tokenizer.bos_token_id] + prompt_ids
    labels = [int(good) for good in row.labels or []]
    if train_on_last_step_only:
        labels = [-100] * (len(labels) - 1) + labels[-1:]
    steps = [tokenizer(step, add_special_tokens=False)["input_ids"] + sep_ids for step in row.steps]
    step_labels = [[-100] * (len(ids) - 1) + [label] for ids, label in zip(steps, labels, strict=True)]
    return {"input_ids": prompt_ids + list(chain(*steps)),
            "labels": [-100] * len(prompt_ids) + list(chain(*step_labels))}


def load_rows(spec: PRMTrainSpec) -> tuple[list[StepwiseRow], list[StepwiseRow], dict[str, Any]]:
    """Checked stepwise rows, split by response, and a report of what they rest on."""
    rows: list[StepwiseRow] = []
    unlabelled = 0
    for where, record in read_records(spec.step_snapshot):
        row = read_stepwise_row(record, row=where)
        if row.labels is None:
            unlabelled += 1
            continue
        rows.append(row)
    groups = [str(r.metadata.get("response_id") or json.dumps([r.prompt, r.steps])) for r in rows]
    if len(rows) < 10:
        raise UserError(f"{spec.step_snapshot}: only {len(rows)} labelled stepwise rows; a process reward model "
                        "needs at least 10 (8 to train, 2 held out) — label more responses")
    train, held_out = split_held_out(rows, spec.eval_fraction, spec.seed, source=str(spec.step_snapshot),
                                     groups=groups)
    report = {"rows_in": len(rows) + unlabelled, "train_rows": len(train), "held_out_rows": len(held_out),
              "dropped": {"no labels": unlabelled},
              "split": {"by": "response", "groups": len(set(groups)),
                        "note": "rows of one response (response_id, else prompt + steps) stay on one side"}}
    return train, held_out, report


def _encode(rows: list[StepwiseRow], tokenizer: Any, sep_ids: list[int], spec: PRMTrainSpec, side: str,
            where: list[str] | None = None) -> tuple[list[dict[str, list[int]]], list[StepwiseRow], int]:
    """Tokenised rows that fit ``max_length`` (the rest are counted), refusing a step that alone is longer."""
    kept, kept_rows, too_long = [], [], 0
    for index, row in enumerate(rows):
        for k, step in enumerate(row.steps):
            n = len(tokenizer(step, add_special_tokens=False)["input_ids"]) + len(sep_ids)
            if n > spec.max_length:
                raise UserError(f"{side} row {index + 1} (prompt {row.prompt[:40]!r}), field 'completions': step "
                                f"{k + 1} is {n} tokens, longer than max_length={spec.max_length} (the model's "
                                "context for one row); split it into shorter steps or raise max_length")
        encoded = tokenize_row(row, tokenizer, sep_ids, spec.train_on_last_step_only and side == "train")
        if len(encoded["input_ids"]) > spec.max_length:
            too_long += 1
            continue
        kept.append(encoded)
        kept_rows.append(row)
    return kept, kept_rows, too_long


def predict_steps(model: Any, tokenizer: Any, encoded: list[dict[str, list[int]]], batch_size: int,
                  device: Any) -> list[list[float]]:
    """P(good) at each labelled position of each encoded row (rows as ``tokenize_row`` returns them)."""
    from itertools import chain

    import numpy as np
    import torch

    out: list[list[float]] = []
    model.eval()
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    with torch.no_grad():
        for start in range(0, len(encoded), batch_size):
            batch = encoded[start:start + batch_size]
            lengths = [len(e["input_ids"]) for e in batch]
            total, width = sum(lengths), max(lengths)
            # right padding: positions of the labels stay where tokenize_row put them. The rows go in as one flat
            # array scattered under the mask: torch.tensor over nested lists cost about as much as the tiny
            # model's forward (bench/process_reward.py)
            mask = torch.arange(width)[None, :] < torch.tensor(lengths)[:, None]
            ids = torch.full((len(batch), width), pad, dtype=torch.long)
            ids[mask] = torch.from_numpy(np.fromiter(chain.from_iterable(e["input_ids"] for e in batch), np.int64,
                                                     count=total))
            labelled = torch.zeros((len(batch), width), dtype=torch.bool)
            labelled[mask] = torch.from_numpy(np.fromiter(chain.from_iterable(e["labels"] for e in batch), np.int64,
                                                          count=total) != -100)
            logits = model(input_ids=ids.to(device), attention_mask=mask.long().to(device)).logits.float()
            # P(good) = softmax(...)[1] = sigmoid(l1 - l0), at the labelled positions only (row-major, so each row's
            # in order), read once into Python (per-element tensor reads are slow)
            probs = torch.sigmoid(logits[..., 1] - logits[..., 0])[labelled.to(device)].tolist()
            at = 0
            for n in labelled.sum(dim=1).tolist():
                out.append(probs[at:at + n])
                at += n
    return out


def train_prm(spec: PRMTrainSpec) -> int:
    """Run a PRM spec end to end; return the process exit code (0, or 143 when stopped)."""
    backbone = resolve_model_source(spec.backbone, "backbone")
    train_rows, held_rows, report = load_rows(spec)
    import datasets
    from transformers import (AutoModelForTokenClassification, AutoTokenizer, DataCollatorForTokenClassification,
                              Trainer, TrainingArguments)

    from rlcore.training.mirrors import mirror_arguments, point_mirrors_at
    from rlcore.training.reporting import EventReporter, RunFiles, detach_console_printer

    datasets.disable_progress_bars()
    tokenizer = AutoTokenizer.from_pretrained(backbone)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token or tokenizer.sep_token
    sep_ids, added = separator_ids(tokenizer, spec.step_separator, add=spec.add_separator_token, backbone=backbone)
    train_enc, _, train_long = _encode(train_rows, tokenizer, sep_ids, spec, "train")
    # held-out labels are every step's, also with train_on_last_step_only
    held_enc, held_kept, held_long = _encode(held_rows, tokenizer, sep_ids, spec, "held-out")
    too_long = f"longer than max_length={spec.max_length} tokens"
    report["dropped"].update({f"train: {too_long}": train_long, f"held out: {too_long}": held_long})
    report.update(train_rows_kept=len(train_enc), held_out_rows_kept=len(held_enc))
    if not train_enc or not held_enc:
        raise UserError(f"max_length: every {'training' if not train_enc else 'held-out'} row is {too_long}; "
                        "raise max_length or use shorter responses")

    spec.output_dir.mkdir(parents=True, exist_ok=True)
    (spec.output_dir / "spec.json").write_text(spec.model_dump_json(indent=1))
    files = RunFiles(spec.output_dir)
    stop = StopRequest().install()
    try:
        model = AutoModelForTokenClassification.from_pretrained(
            backbone, num_labels=2, id2label=ID2LABEL, label2id={v: k for k, v in ID2LABEL.items()})
        if added:
            model.resize_token_embeddings(len(tokenizer))
        if model.config.pad_token_id is None:
            model.config.pad_token_id = tokenizer.pad_token_id
        context = getattr(model.config, "max_position_embeddings", None)
        if context is not None and spec.max_length > context:
            raise UserError(f"max_length: {spec.max_length} is beyond the backbone's context of {context} tokens; "
                            f"use max_length <= {context}")
        point_mirrors_at(spec.output_dir, spec.report_to, None)
        args = TrainingArguments(
            output_dir=str(spec.output_dir / "checkpoints"), seed=spec.seed, max_steps=spec.max_steps or -1,
            num_train_epochs=spec.num_train_epochs, learning_rate=spec.learning_rate,
            lr_scheduler_type=spec.lr_scheduler_type, warmup_steps=spec.warmup_steps, weight_decay=spec.weight_decay,
            max_grad_norm=spec.max_grad_norm, per_device_train_batch_size=spec.per_device_train_batch_size,
            gradient_accumulation_steps=spec.gradient_accumulation_steps, logging_steps=spec.logging_steps,
            save_strategy="steps", save_steps=spec.save_steps, save_total_limit=spec.save_total_limit,
            disable_tqdm=True, remove_unused_columns=False,
            **mirror_arguments(spec.report_to, "model", spec.output_dir.name), **device_arguments(spec))
        reporter = EventReporter(files, stop)
        trainer = Trainer(model=model, args=args, train_dataset=datasets.Dataset.from_list(train_enc),
                          data_collator=DataCollatorForTokenClassification(tokenizer), processing_class=tokenizer,
                          callbacks=[reporter])
        detach_console_printer(trainer)
        files.metric(0, "data/train_rows_kept", len(train_enc))
        files.metric(0, "data/held_out_rows_kept", len(held_enc))
        print(f"rlcore: {report['rows_in']} stepwise rows in; training on {len(train_enc)}, holding out "
              f"{len(held_enc)} (split by response); dropped {report['dropped']}", file=sys.stderr, flush=True)
        resume_from = last_checkpoint(spec.output_dir / "checkpoints") if spec.resume else None
        try:
            trainer.train(resume_from_checkpoint=resume_from)
        except Exception as exc:
            if is_out_of_memory(exc):
                raise UserError(out_of_memory_message(spec, "max_length")) from exc
            raise
        if reporter.non_finite_step is not None:
            raise UserError(non_finite_loss_message(spec, reporter.non_finite_step))
        if stop.requested and not plan_complete(trainer.state):
            return EXIT_STOPPED
        scores = predict_steps(trainer.model, tokenizer, held_enc, spec.per_device_eval_batch_size, trainer.args.device)
        metrics = step_metrics([[p >= 0.5 for p in s] for s in scores], [list(r.labels or []) for r in held_kept])
        step = trainer.state.global_step
        for name in ("step_accuracy", "first_error_accuracy", "n_steps", "n_responses"):
            files.metric(step, f"eval_{name}", metrics[name])
        final = spec.output_dir / "model"
        staging = staging_directory(final)
        trainer.save_model(str(staging))
        tokenizer.save_pretrained(str(staging))
        (staging / PRM_FILE).write_text(json.dumps({"step_separator": spec.step_separator, "metrics": metrics,
                                                     "data": report, "step": step}, indent=1))
        publish_directory(staging, final)
        (spec.output_dir / "eval.json").write_text(json.dumps({"metrics": metrics, "data": report}, indent=1))
        emit_artifact("process_reward_model", str(final), metrics=metrics, data=report, step=step)
        return 0
    finally:
        stop.uninstall()
        files.close()


def read_prm_settings(model_dir: str | Path) -> dict[str, Any]:
    """The ``rlcore_prm.json`` of a trained PRM (its step separator); ``{}`` for a PRM trained elsewhere."""
    path = Path(model_dir) / PRM_FILE
    return json.loads(path.read_text()) if path.is_file() else {}
