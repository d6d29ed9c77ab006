"""Process rewards: score each step of a completion, aggregate the step scores, combine with an outcome.

Step scores are in [0, 1]: a process reward model's P(good) at the separator after each step (the
formulation rlcore.training.prm trains), or an LM judge's grade of each step rescaled to [0, 1].

Aggregations of step scores ``s_1 .. s_K`` (each documented in docs/process_rewards.md):

- ``min``: ``min_k s_k`` — a chain is as good as its weakest step (the usual PRM choice);
- ``mean``: ``(1/K) sum_k s_k`` — the share of good steps, forgiving one slip;
- ``last``: ``s_K`` — the model's view of the whole chain at its end;
- ``product``: ``prod_k s_k`` — the probability that every step is good, if steps were independent.

>>> [aggregate([0.9, 0.5, 0.8], how) for how in ("min", "mean", "last", "product")]
[0.5, 0.7333333333333334, 0.8, 0.36000000000000004]

Outcome–process normalisation ``renorm`` (after PPR's ReNorm, Xu et al. 2025, arXiv:2509.25598): with
the outcome ``o`` in [0, 1] (a verifier: 1 right, 0 wrong) and the aggregated process score ``p`` in
[0, 1], the reward is ``o + p - 1``: in [0, 1] when the outcome is right and in [-1, 0] when it is
wrong, so good steps never lift a wrong answer above a right one. The paper's exact equation could
not be read here (only its abstract was reachable); this is rlcore's reading, named as such in the docs.

>>> renorm(1.0, 0.25), renorm(0.0, 0.75), renorm(None, 0.5)
(0.25, -0.25, None)
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rlcore.errors import UserError
from rlcore.steps import StepError, split_steps

AGGREGATIONS = ("min", "mean", "last", "product")


def aggregate(scores: Sequence[float], how: str) -> float | None:
    """One number from a completion's step scores; None for a completion with no steps."""
    if not scores:
        return None
    if how == "min":
        return min(scores)
    if how == "mean":
        return sum(scores) / len(scores)
    if how == "last":
        return scores[-1]
    if how == "product":
        return math.prod(scores)
    raise ValueError(f"unknown aggregation {how!r} (one of {', '.join(AGGREGATIONS)})")


def renorm(outcome: float | None, process: float | None) -> float | None:
    """``outcome + process - 1`` (see the module docstring); None when either is missing."""
    if outcome is None or process is None:
        return None
    return outcome + process - 1.0


class ProcessScorer:
    """Scores every step of each completion with a PRM (or a step judge), then aggregates per completion.

    ``last_steps`` keeps the step scores of the latest batch (for samples and the per-step figures)."""

    def __init__(self, component: Any, judge: Any = None) -> None:
        self.c = component
        self.judge = judge
        self._model = self._tokenizer = self._device = None
        self._sep_ids: list[int] = []
        self.last_steps: list[list[float] | None] = []
        if component.scorer == "judge" and judge is None:
            raise UserError(f"component {component.name!r} grades steps with an LM judge; pass a judge")

    # ---------------------------------------------------------------- steps

    def steps(self, text: str) -> list[str]:
        try:
            return [s.text for s in split_steps(text, self.c.split)]
        except StepError:
            # A completion the policy wrote with too few / too many steps is a reward of None (left out of the
            # sum, counted by TRL as missing), never a crash of the run.
            return []

    # ---------------------------------------------------------------- PRM

    def load(self) -> None:
        import torch
        from transformers import AutoModelForTokenClassification, AutoTokenizer

        from rlcore.training.prm import read_prm_settings, separator_ids

        c = self.c
        try:
            tokenizer = AutoTokenizer.from_pretrained(c.path)
            model = AutoModelForTokenClassification.from_pretrained(c.path)
        except (OSError, ValueError) as exc:
            raise UserError(f"component {c.name!r}, field path: cannot load a process reward model from {c.path} "
                            f"({exc})") from None
        separator = c.step_separator or read_prm_settings(c.path).get("step_separator", "\n")
        self._sep_ids, _ = separator_ids(tokenizer, separator, add=False, backbone=c.path)
        if tokenizer.pad_token_id is None:
            tokenizer.pad_token = tokenizer.eos_token or tokenizer.unk_token
        device = c.device
        if device == "auto":
            device = f"cuda:{torch.cuda.current_device()}" if torch.cuda.is_available() else "cpu"
        self._tokenizer, self._model, self._device = tokenizer, model.to(device).eval(), device

    def _model_scores(self, prompts: list[str], steps: list[list[str]]) -> list[list[float]]:
        from rlcore.training.prm import predict_steps

        if self._model is None:
            self.load()
        tokenizer, sep = self._tokenizer, self._sep_ids
        # one batched tokenizer call for every prompt and step (per-text calls cost more than the tiny forward);
        # the ids are laid out exactly as rlcore.training.prm.tokenize_row lays them out in training
        texts = prompts + [step for parts in steps for step in parts]
        backend = getattr(tokenizer, "backend_tokenizer", None) if getattr(tokenizer, "is_fast", False) else None
        if backend is not None and backend.truncation is None and backend.padding is None:
            # the Rust tokenizer straight: the same ids as tokenizer(texts) (which, untruncated and unpadded, calls
            # it the same way), without building a Python BatchEncoding per text (~20 % of the overhead here)
            ids = [e.ids for e in backend.encode_batch(texts, add_special_tokens=False)]
        else:
            ids = tokenizer(texts, add_special_tokens=False)["input_ids"]
        bos = [tokenizer.bos_token_id] if tokenizer.bos_token_id is not None else []
        encoded, at = [], len(prompts)
        for k, parts in enumerate(steps):
            input_ids, labels = bos + ids[k], [-100] * (len(bos) + len(ids[k]))
            for step_ids in ids[at:at + len(parts)]:
                input_ids += step_ids + sep
                labels += [-100] * (len(step_ids) + len(sep) - 1) + [1]
            at += len(parts)
            # too long: keep the first max_length tokens; the steps cut off are left unscored
            encoded.append({"input_ids": input_ids[:self.c.max_length], "labels": labels[:self.c.max_length]})
        order = sorted(range(len(encoded)), key=lambda k: len(encoded[k]["input_ids"]))
        scored = predict_steps(self._model, self._tokenizer, [encoded[k] for k in order], self.c.batch_size,
                               self._device)
        out: list[list[float]] = [[] for _ in encoded]
        for k, scores in zip(order, scored):
            out[k] = scores
        return out

    # ---------------------------------------------------------------- judge

    def _judge_scores(self, prompts: list[str], steps: list[list[str]]) -> list[list[float]]:
        from rlcore.judges.base import GradeRequest

        requests, where = [], []
        for i, (prompt, parts) in enumerate(zip(prompts, steps)):
            for k, step in enumerate(parts):
                context = prompt if k == 0 else prompt + "\n\nSteps so far:\n" + "\n".join(parts[:k])
                requests.append(GradeRequest(request_id=f"{i}:{k}", prompt=context, response=step,
                                             criterion="step", description=self.c.judge_instruction))
                where.append(i)
        out: list[list[float]] = [[] for _ in prompts]
        for i, result in zip(where, self.judge.grade(requests) if requests else []):
            verdict = result.verdict
            # an unparseable grade counts as a bad step: a judge that cannot say the step is good did not vouch for it
            out[i].append(0.0 if verdict is None else min(1.0, max(0.0, float(verdict))))
        return out

    # ---------------------------------------------------------------- batch

    def __call__(self, batch: Any, indices: Sequence[int]) -> list[float | None]:
        prompts = [batch.prompt_texts[i] for i in indices]
        steps = [self.steps(batch.completion_texts[i]) for i in indices]
        live = [k for k, parts in enumerate(steps) if parts]
        scores: list[list[float] | None] = [None] * len(steps)
        if live:
            scorer = self._model_scores if self.c.scorer == "model" else self._judge_scores
            for k, values in zip(live, scorer([prompts[k] for k in live], [steps[k] for k in live])):
                scores[k] = values
        self.last_steps = scores
        return [None if s is None else aggregate(s, self.c.aggregation) for s in scores]

    def __getstate__(self) -> dict:
        return {"c": self.c, "judge": self.judge, "_model": None, "_tokenizer": None, "_device": None,
                "_sep_ids": [], "last_steps": []}


def process_model_problems(path: str) -> list[str]:
    """Why ``path`` cannot be a process reward model (a local directory's config), or nothing."""
    import json

    from rlcore.training.runtime import looks_like_local_path

    config = Path(path) / "config.json"
    if not Path(path).exists():
        return [f"{path} does not exist"] if looks_like_local_path(path) else []  # a hub id is checked on load
    try:
        architectures = json.loads(config.read_text()).get("architectures") or []
    except OSError:
        return [f"{path} has no config.json"]
    except ValueError:
        return [f"{path}/config.json is not valid JSON"]
    if architectures and not any(a.endswith("ForTokenClassification") for a in architectures):
        return [f"{path} is a {architectures[0]}, not a token-classification (process reward) model; train one "
                "with python -m rlcore train prm"]
    return []
