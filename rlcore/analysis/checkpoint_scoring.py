"""Score a GRPO run's checkpoints on a held-out prompt set: the rows ``analysis overopt`` reads.

``python -m rlcore analysis overopt-score --spec SCORE.yaml`` (and the webapp's ``overopt_score`` job).
Per checkpoint (and the start policy itself, as step 0, where KL is 0 by construction):

1. generate ``samples_per_prompt`` responses per prompt with rlcore.generation's local path (the same
   loading, prompt encoding and batched, left-padded ``generate``);
2. re-tokenise each response and take log pi(y_t | prompt, y_<t) under the checkpoint and log pi_0(y_t | ...)
   under the start policy: the k1 KL estimator of docs/rounds.md is their mean difference per token. Because
   the decoded text is re-tokenised, y is the text's canonical tokenisation, which can differ from the sampled
   ids at a few merges (the estimate is of the same text's probability, not of the exact sampled path); at a
   temperature other than 1 the samples come from the tempered policy, which the estimator does not correct;
3. score each response with the run's own RewardSpec (the proxy: total and each component, weighted as in the
   total) and with the gold: another RewardSpec (a different reward model, or a ``rubric_judge`` scored by an
   LM judge through the judges' OpenAI-compatible backend), or none (``human_win_rate``: gold stays null and
   the webapp fills it from people's labels).

Rows go to ``output`` (JSONL of ``SampleScore``) one checkpoint at a time, fsynced, so a failure keeps the
checkpoints already scored and a re-run skips them. A checkpoint folder missing from disk is refused by name
before anything runs; one that vanishes mid-run stops the run after the checkpoints before it.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from rlcore.errors import UserError, validation_message
from rlcore.launch import LaunchSettings
from rlcore.rewards.spec import RewardSpec

START = "start"


class CheckpointRef(BaseModel):
    model_config = ConfigDict(extra="forbid")

    path: Path = Field(description="checkpoint folder (checkpoints/checkpoint-N of a run's output)")
    step: int = Field(ge=0, description="training step; orders the checkpoints")
    name: str = Field("", description="how the report names it; defaults to the folder's name")

    @property
    def label(self) -> str:
        return self.name or self.path.name


class GoldSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    kind: Literal["lm_judge", "reward_model", "human_win_rate"] = Field(description="the gold signal")
    reward: RewardSpec | None = Field(None, description="lm_judge / reward_model: the spec whose total is gold "
                                                        "(a rubric_judge component, or a reward_model component)")
    judge: dict[str, Any] | None = Field(None, description="lm_judge: OpenAICompatSettings of the judge endpoint "
                                                           "(base_url, model, ...), or {'deterministic': true}")
    api_key_file: Path | None = Field(None, description="lm_judge: a file holding the judge's key, deleted once read")

    @model_validator(mode="after")
    def _needs_reward(self) -> GoldSpec:
        if self.kind != "human_win_rate" and self.reward is None:
            raise ValueError(f"gold kind {self.kind!r} needs `reward`, the RewardSpec whose total is the gold score")
        if self.kind == "lm_judge" and not self.judge:
            raise ValueError("gold kind 'lm_judge' needs `judge` (base_url and model of the judge endpoint)")
        return self


class OveroptScoreSettings(LaunchSettings):
    """How ``analysis overopt-score`` samples (see ``OveroptScoreSpec``): the settings a person chooses."""

    include_start: bool = Field(True, description="also score the start policy as step 0 (KL 0)")
    samples_per_prompt: int = Field(1, ge=1, le=64, description="completions per prompt and checkpoint")
    temperature: float = Field(1.0, ge=0, description="sampling temperature (1: samples from the policy itself)")
    top_p: float = Field(1.0, gt=0, le=1, description="nucleus sampling mass")
    max_new_tokens: int = Field(64, ge=1, le=32768, description="most tokens per completion")
    seed: int = Field(0, description="random seed of the sampling")
    batch_size: int = Field(8, ge=1, le=1024, description="sequences per generate call")


class OveroptScoreSpec(OveroptScoreSettings):
    """What ``analysis overopt-score`` reads."""

    prompts: Path = Field(description="held-out prompt set (JSONL: `prompt`, optional `id`), fixed for all checkpoints")
    output: Path = Field(description="SampleScore JSONL, appended one checkpoint at a time")
    start_policy: str = Field(min_length=1, description="the policy the run started from (folder or hub id)")
    checkpoints: list[CheckpointRef] = Field(min_length=1, description="the run's checkpoints to score")
    reward: RewardSpec = Field(description="the run's own reward spec: the proxy")
    gold: GoldSpec = Field(description="the reward the proxy is measured against")


def load_score_spec(path: str | Path) -> OveroptScoreSpec:
    from rlcore.training.specs import read_spec_file

    try:
        spec = OveroptScoreSpec.model_validate(read_spec_file(path))
    except ValidationError as exc:
        raise UserError(validation_message(str(path), exc)) from exc
    base = Path(path).parent
    absolute = lambda p: p if p.is_absolute() else base / p  # noqa: E731
    return spec.model_copy(update={
        "prompts": absolute(spec.prompts), "output": absolute(spec.output),
        "checkpoints": [c.model_copy(update={"path": absolute(c.path)}) for c in spec.checkpoints]})


def missing_checkpoints(spec: OveroptScoreSpec) -> list[CheckpointRef]:
    return [c for c in spec.checkpoints if not (c.path / "config.json").is_file()]


def _note(message: str) -> None:
    from rlcore.events import NOTE_PREFIX

    print(NOTE_PREFIX + message, file=sys.stderr, flush=True)


def sequence_logprobs(model, prompt_ids: Sequence[list[int]], completion_ids: Sequence[list[int]],
                      batch_size: int = 8) -> list[list[float]]:
    """log p(y_t | prompt, y_<t) of every completion token, one teacher-forced forward per batch (right-padded)."""
    import torch

    out: list[list[float]] = []
    for start in range(0, len(prompt_ids), batch_size):
        rows = [list(p) + list(c) for p, c in zip(prompt_ids[start:start + batch_size],
                                                  completion_ids[start:start + batch_size])]
        width = max(len(r) for r in rows)
        ids = torch.zeros((len(rows), width), dtype=torch.long)
        mask = torch.zeros_like(ids)
        for i, r in enumerate(rows):
            ids[i, :len(r)] = torch.tensor(r)
            mask[i, :len(r)] = 1
        with torch.inference_mode():
            logits = model(input_ids=ids.to(model.device), attention_mask=mask.to(model.device)).logits.float()
        logp = torch.log_softmax(logits, dim=-1).cpu()
        for i, (p, c) in enumerate(zip(prompt_ids[start:start + batch_size], completion_ids[start:start + batch_size])):
            positions = torch.arange(len(p) - 1, len(p) + len(c) - 1)  # logits at t-1 predict token t
            out.append(logp[i, positions, torch.tensor(c, dtype=torch.long)].tolist() if c else [])
    return out


def _gold_engine(gold: GoldSpec):
    from rlcore.rewards.engine import RewardEngine

    if gold.kind == "human_win_rate":
        return None
    judge = None
    if gold.kind == "lm_judge":
        if gold.judge.get("deterministic"):
            from rlcore.judges.deterministic import DeterministicJudge

            judge = DeterministicJudge()
        else:
            from rlcore.judges.openai_compat import OpenAICompatJudge, OpenAICompatSettings

            settings = dict(gold.judge)
            if gold.api_key_file is not None:
                from rlcore.judges.cli import read_api_key_file

                settings["api_key"] = read_api_key_file(gold.api_key_file)
            try:
                judge = OpenAICompatJudge(OpenAICompatSettings(**settings))
            except ValidationError as exc:
                raise UserError(validation_message("gold.judge", exc)) from None
    return RewardEngine(gold.reward, judge=judge)


def _done_checkpoints(output: Path) -> set[str]:
    from rlcore.jsonl import read_jsonl_objects

    if not output.exists():
        return set()
    return {str(row.get("checkpoint")) for _, row in read_jsonl_objects(output)}


def score_checkpoints(spec: OveroptScoreSpec) -> dict[str, Any]:
    """Score every checkpoint ``spec.output`` lacks; returns {checkpoints_scored, skipped, rows}."""
    from rlcore.analysis.overoptimization import SampleScore
    from rlcore.events import emit_progress
    from rlcore.generation.run import encode_prompts, generate_batch, load_local_policy, read_prompts
    from rlcore.generation.spec import GenerationSpec, PolicyRef
    from rlcore.rewards.engine import RewardEngine, rows_to_batch

    if missing := missing_checkpoints(spec):
        raise UserError("checkpoint(s) not on disk: " + ", ".join(f"{c.label} ({c.path})" for c in missing)
                        + ". Deleted checkpoints cannot be scored: pick checkpoints the run still has.")
    prompts = read_prompts(spec.prompts)
    proxy, gold = RewardEngine(spec.reward), _gold_engine(spec.gold)
    targets = [CheckpointRef(path=Path(spec.start_policy), step=0, name=START)] if spec.include_start else []
    targets += sorted(spec.checkpoints, key=lambda c: c.step)
    done = _done_checkpoints(spec.output)
    todo = [c for c in targets if c.label not in done]
    gen = GenerationSpec(prompts=spec.prompts, output=spec.output, policies=[{"kind": "folder", "location": "x"}],
                         samples_per_prompt=spec.samples_per_prompt, temperature=spec.temperature, top_p=spec.top_p,
                         max_new_tokens=spec.max_new_tokens, seed=spec.seed, batch_size=spec.batch_size)
    start_ref = PolicyRef(kind="folder" if Path(spec.start_policy).is_dir() else "hub", location=spec.start_policy,
                          name=START)
    start_model, start_tokenizer = load_local_policy(start_ref)
    spec.output.parent.mkdir(parents=True, exist_ok=True)
    emit_progress(len(targets) - len(todo), len(targets))
    rows_written = 0
    import torch

    for number, checkpoint in enumerate(todo):
        if checkpoint.label != START and not (checkpoint.path / "config.json").is_file():
            raise UserError(f"checkpoint {checkpoint.label} ({checkpoint.path}) disappeared from disk during "
                            f"scoring; the {len(targets) - len(todo) + number} checkpoint(s) before it are kept in "
                            f"{spec.output}")
        policy = start_ref if checkpoint.label == START else PolicyRef(
            kind="folder", location=str(checkpoint.path), name=checkpoint.label, step=checkpoint.step)
        model, tokenizer = (start_model, start_tokenizer) if policy is start_ref else load_local_policy(policy)
        if tokenizer.get_vocab() != start_tokenizer.get_vocab():  # log-probs of different ids are not comparable
            raise UserError(f"checkpoint {checkpoint.label} ({checkpoint.path}) has another tokenizer than the start "
                            f"policy {spec.start_policy}: the KL needs both to read the same tokens; pick the run's "
                            "own start policy")
        encoded = encode_prompts(gen, policy, model, tokenizer, prompts)
        torch.manual_seed(spec.seed)
        work = [(p, i) for p in prompts for i in range(spec.samples_per_prompt)]
        texts: list[str] = []
        for start in range(0, len(work), spec.batch_size):
            batch = work[start:start + spec.batch_size]
            texts += generate_batch(model, tokenizer, [encoded[p.key][0] for p, _ in batch], gen)[0]
        prompt_ids = [encoded[p.key][0] for p, _ in work]
        completion_ids = [tokenizer(t, add_special_tokens=False)["input_ids"] for t in texts]
        logprobs = sequence_logprobs(model, prompt_ids, completion_ids, spec.batch_size)
        ref_logprobs = logprobs if model is start_model else sequence_logprobs(
            start_model, prompt_ids, completion_ids, spec.batch_size)
        rows = [{"prompt": p.prompt, "completion": t} for (p, _), t in zip(work, texts)]
        scored = proxy.score_batch(rows_to_batch(rows))
        golds = gold.score_batch(rows_to_batch(rows)) if gold is not None else [None] * len(rows)
        lines = []
        for (p, i), text, lp, ref, s, g in zip(work, texts, logprobs, ref_logprobs, scored, golds):
            kl = (sum(a - b for a, b in zip(lp, ref)) / len(lp)) if lp else 0.0
            sample = SampleScore(
                checkpoint=checkpoint.label, step=checkpoint.step, prompt_id=p.key,
                response_id=f"{checkpoint.label}/{p.key}/{i}", prompt=p.prompt if isinstance(p.prompt, str) else
                json.dumps(p.prompt), completion=text, proxy=s.total if s.total is not None else 0.0,
                components={n: v * w for n, w in zip(proxy.names, proxy.weights)
                            if (v := s.components.get(n)) is not None},
                gold=None if g is None else g.total, kl=kl, tokens=len(lp))
            lines.append(sample.model_dump(exclude_none=True))
        with spec.output.open("a", encoding="utf-8") as out:
            for line in lines:
                out.write(json.dumps(line, ensure_ascii=False) + "\n")
            out.flush()
            os.fsync(out.fileno())  # a checkpoint is kept whole or not at all
        rows_written += len(lines)
        if model is not start_model:
            del model
        _note(f"{checkpoint.label}: {len(lines)} samples scored")
        emit_progress(len(targets) - len(todo) + number + 1, len(targets))
    return {"checkpoints_scored": len(todo), "skipped": len(targets) - len(todo), "rows": rows_written}
