"""The reward engine: a validated RewardSpec compiled into scorers, applied to a batch of completions.

Both TRL (through :mod:`rlcore.rewards.trl_adapter`) and the CLI / live preview (:func:`score_rows`) go through
``RewardEngine``, so a spec scores the same everywhere.

>>> spec = RewardSpec(name="s", components=[
...     {"kind": "verifier", "name": "correct", "reference_column": "answer", "mode": "numeric"},
...     {"kind": "length_penalty", "name": "overlong", "max_length": 6, "cache_length": 2, "unit": "words",
...      "weight": 0.5}])
>>> for row in score_rows(spec, [{"prompt": "1+1?", "completion": "It is 2", "answer": "2"},
...                              {"prompt": "1+1?", "completion": "I think it is 3", "answer": "2"}]):
...     print(row.total, row.components)
1.0 {'correct': 1.0, 'overlong': 0.0}
-0.25 {'correct': 0.0, 'overlong': -0.5}
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, Field

from rlcore.errors import UserError
from rlcore.rewards.check import validate_spec
from rlcore.rewards.combine import group_zscore, par, soft_overlong_penalty, weighted_sum
from rlcore.rewards.spec import (
    LengthPenaltyComponent,
    ProcessRewardModelComponent,
    RewardModelComponent,
    RewardSpec,
    RubricJudgeComponent,
    RubricRulesComponent,
    VerifierComponent,
)
from rlcore.rubric import CompiledRubric
from rlcore.rules import answer_matcher

# keyword arguments TRL passes to reward functions that are not dataset columns
TRAINER_KWARGS = frozenset({"trainer_state", "log_extra", "log_metric", "environments"})


# ---------------------------------------------------------------- batches


def message_text(content: Any) -> str:
    """The text of a message's content (a string, or a list of parts with ``text``)."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(part.get("text", "") if isinstance(part, dict) else str(part) for part in content)
    return str(content)


def completion_text(completion: Any) -> str:
    """Text of a completion: a string, or the assistant messages of a conversational completion.

    >>> completion_text([{"role": "assistant", "content": "Hi"}]), completion_text("Hi")
    ('Hi', 'Hi')
    """
    if isinstance(completion, str):
        return completion
    if isinstance(completion, dict):
        return message_text(completion.get("content"))
    if isinstance(completion, list):
        texts = [message_text(m.get("content")) for m in completion if m.get("role", "assistant") == "assistant"]
        return "\n".join(texts) if texts else "\n".join(message_text(m.get("content")) for m in completion)
    return "" if completion is None else str(completion)


def prompt_text(prompt: Any) -> str:
    """Text of a prompt: a string, or a conversation rendered one ``role: content`` paragraph per message.

    >>> prompt_text([{"role": "user", "content": "2+2?"}]), prompt_text([{"role": "system", "content": "Be brief"},
    ...                                                                  {"role": "user", "content": "2+2?"}])
    ('2+2?', 'system: Be brief\\n\\nuser: 2+2?')
    """
    if isinstance(prompt, str):
        return prompt
    if isinstance(prompt, list):
        if len(prompt) == 1:
            return message_text(prompt[0].get("content"))
        return "\n\n".join(f"{m.get('role', 'user')}: {message_text(m.get('content'))}" for m in prompt)
    return "" if prompt is None else str(prompt)


@dataclass
class Batch:
    """Completions to score, with their prompts, dataset columns and token counts, all aligned by row."""

    prompts: Sequence[Any]
    completions: Sequence[Any]
    prompt_texts: list[str]
    completion_texts: list[str]
    rows: list[dict[str, Any]]
    n_tokens: list[int | None]

    @property
    def conversational(self) -> bool:
        return bool(self.completions) and isinstance(self.completions[0], list)


def make_batch(prompts: Sequence[Any], completions: Sequence[Any], completion_ids: Sequence[Sequence[int]] | None = None,
               columns: Mapping[str, Sequence[Any]] | None = None) -> Batch:
    """Build a batch from TRL-style arguments (columns as lists aligned with the completions)."""
    n = len(completions)
    if len(prompts) != n:
        raise ValueError(f"{len(prompts)} prompts for {n} completions")
    # dataset columns come as one list entry per completion; anything else TRL passes is not a column
    columns = {k: v for k, v in (columns or {}).items()
               if k not in TRAINER_KWARGS and isinstance(v, (list, tuple)) and len(v) == n}
    if columns:
        keys = list(columns)
        rows = [dict(zip(keys, values)) for values in zip(*(columns[k] for k in keys))]
    else:
        rows = [{} for _ in range(n)]
    return Batch(
        prompts=prompts,
        completions=completions,
        prompt_texts=[prompt_text(p) for p in prompts],
        completion_texts=[completion_text(c) for c in completions],
        rows=rows,
        n_tokens=[len(ids) for ids in completion_ids] if completion_ids is not None else [None] * n,
    )


# ---------------------------------------------------------------- scorers


class _RubricRulesScorer:
    def __init__(self, component: RubricRulesComponent) -> None:
        self.compiled = CompiledRubric(component.rubric, checked=True)

    def __call__(self, batch: Batch, indices: Sequence[int]) -> list[float | None]:
        score, texts, rows, n_tokens = self.compiled.score_rules, batch.completion_texts, batch.rows, batch.n_tokens
        return [score(texts[i], rows[i], n_tokens[i]) for i in indices]


class _RubricJudgeScorer:
    def __init__(self, component: RubricJudgeComponent, judge) -> None:
        if judge is None and any(c.rule is None for c in component.rubric.criteria):
            raise UserError(f"component {component.name!r} grades criteria with an LM judge; pass a judge")
        self.compiled = CompiledRubric(component.rubric, checked=True)
        self.judge = judge
        self.reference_column = component.reference_column

    def __call__(self, batch: Batch, indices: Sequence[int]) -> list[float | None]:
        scores = self.compiled.score(
            [batch.completion_texts[i] for i in indices], prompts=[batch.prompt_texts[i] for i in indices],
            rows=[batch.rows[i] for i in indices], n_tokens=[batch.n_tokens[i] for i in indices], judge=self.judge,
            reference_column=self.reference_column,
        )
        return [s.total for s in scores]


class _VerifierScorer:
    def __init__(self, component: VerifierComponent) -> None:
        self.column = component.reference_column
        self.matches = answer_matcher(component.mode, component.tolerance)
        self.correct, self.incorrect = component.correct, component.incorrect

    def __call__(self, batch: Batch, indices: Sequence[int]) -> list[float | None]:
        out: list[float | None] = []
        for i in indices:
            reference = batch.rows[i].get(self.column)
            if reference is None or (isinstance(reference, str) and not reference.strip()):
                out.append(None)
            else:
                out.append(self.correct if self.matches(batch.completion_texts[i], reference) else self.incorrect)
        return out


class _LengthPenaltyScorer:
    def __init__(self, component: LengthPenaltyComponent) -> None:
        self.c = component

    def __call__(self, batch: Batch, indices: Sequence[int]) -> list[float | None]:
        c, out = self.c, []
        for i in indices:
            text = batch.completion_texts[i]
            if c.unit == "chars":
                length = len(text)
            elif c.unit == "tokens" and batch.n_tokens[i] is not None:
                length = batch.n_tokens[i]
            else:
                length = len(text.split())
            out.append(soft_overlong_penalty(length, c.max_length, c.cache_length, c.penalty))
        return out


class _RewardModelScorer:
    """Scores prompt + completion with a sequence-classification model; loads it on first use."""

    def __init__(self, component: RewardModelComponent) -> None:
        self.c = component
        self._model = self._tokenizer = self._device = None

    def _load(self) -> None:
        import torch
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        c = self.c
        try:
            tokenizer = AutoTokenizer.from_pretrained(c.path)
            model = AutoModelForSequenceClassification.from_pretrained(c.path, num_labels=1)
        except (OSError, ValueError) as exc:
            raise UserError(f"component {c.name!r}, field path: cannot load a reward model from {c.path} ({exc})") from None
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token or tokenizer.unk_token
        tokenizer.padding_side = "right"  # as TRL; models with absolute positions need it
        model.config.pad_token_id = tokenizer.pad_token_id
        device = c.device
        if device == "auto":
            device = f"cuda:{torch.cuda.current_device()}" if torch.cuda.is_available() else "cpu"
        self._tokenizer, self._model, self._device = tokenizer, model.to(device).eval(), device

    def _text(self, batch: Batch, i: int) -> str:
        tokenizer = self._tokenizer
        prompt, completion = batch.prompts[i], batch.completions[i]
        if isinstance(completion, list) and getattr(tokenizer, "chat_template", None):
            messages = (prompt if isinstance(prompt, list) else [{"role": "user", "content": prompt_text(prompt)}])
            return tokenizer.apply_chat_template(messages + completion, tokenize=False)
        return batch.prompt_texts[i] + batch.completion_texts[i]

    def __call__(self, batch: Batch, indices: Sequence[int]) -> list[float | None]:
        import torch

        if self._model is None:
            self._load()
        texts = [self._text(batch, i) for i in indices]
        order = sorted(range(len(texts)), key=lambda k: len(texts[k]))  # similar lengths share a batch: less padding
        scores: list[float | None] = [None] * len(texts)
        size = self.c.batch_size
        with torch.inference_mode():
            for start in range(0, len(order), size):
                chunk = order[start:start + size]
                encoded = self._tokenizer([texts[k] for k in chunk], padding=True, truncation=True,
                                          max_length=self.c.max_length, return_tensors="pt").to(self._device)
                logits = self._model(**encoded).logits[:, 0].float().tolist()
                for k, value in zip(chunk, logits):
                    scores[k] = value
        return scores

    def __getstate__(self) -> dict:
        return {"c": self.c, "_model": None, "_tokenizer": None, "_device": None}


# ---------------------------------------------------------------- the engine


class ScoredRow(BaseModel):
    """One row's reward: the total TRL optimises and every component."""

    index: int = Field(description="the row's position in the input")
    total: float | None = Field(description="the reward after normalisation; None when no component applies")
    raw_total: float | None = Field(description="the weighted sum of components before normalisation")
    components: dict[str, float | None] = Field(description="each component's value; None where it does not apply")


class RewardEngine:
    """A validated spec, compiled: ``component_values`` per component, ``combine`` into totals.

    ``checked``: the caller validated ``spec`` where it entered its layer (``validate_spec`` against the
    dataset's columns, the webapp's save), so it is not checked a second time here.
    """

    def __init__(self, spec: RewardSpec, *, judge=None, token_counter: Callable[[str], int] | None = None,
                 checked: bool = False) -> None:
        if not checked:
            validate_spec(spec)
        self.spec, self.judge, self.token_counter = spec, judge, token_counter
        self.names = [c.name for c in spec.components]
        self.weights = [c.weight for c in spec.components]
        self.conditions = [c.when for c in spec.components]
        self.scorers = [self._scorer(c) for c in spec.components]

    def _scorer(self, component):
        if isinstance(component, RubricRulesComponent):
            return _RubricRulesScorer(component)
        if isinstance(component, RubricJudgeComponent):
            return _RubricJudgeScorer(component, self.judge)
        if isinstance(component, RewardModelComponent):
            return _RewardModelScorer(component)
        if isinstance(component, VerifierComponent):
            return _VerifierScorer(component)
        if isinstance(component, LengthPenaltyComponent):
            return _LengthPenaltyScorer(component)
        if isinstance(component, ProcessRewardModelComponent):
            from rlcore.rewards.process import ProcessScorer

            return ProcessScorer(component, self.judge)
        raise TypeError(f"unknown component {component!r}")

    def load(self) -> None:
        """Load every reward model now (a server does so before its first request, not racing inside one)."""
        from rlcore.rewards.process import ProcessScorer

        for scorer in self.scorers:
            if isinstance(scorer, _RewardModelScorer) and scorer._model is None:
                scorer._load()
            elif isinstance(scorer, ProcessScorer) and scorer.c.scorer == "model" and scorer._model is None:
                scorer.load()

    def __reduce__(self):  # compiled checks are closures; rebuild them from the spec
        return (_rebuild_engine, (self.spec, self.judge, self.token_counter))

    def component(self, k: int, batch: Batch) -> list[float | None]:
        """Component ``k`` for every row of the batch (None where its condition does not hold)."""
        condition, n = self.conditions[k], len(batch.completions)
        if condition is None:
            return self.scorers[k](batch, range(n))
        indices = [i for i in range(n) if condition.holds(batch.rows[i])]
        values: list[float | None] = [None] * n
        if indices:
            for i, value in zip(indices, self.scorers[k](batch, indices)):
                values[i] = value
        return values

    def component_values(self, batch: Batch) -> list[list[float | None]]:
        """Every component for every row: ``values[k][i]``. A process component with ``combine: renorm`` is
        combined with its outcome component's values here, so its logged value is the reward it adds."""
        values = [self.component(k, batch) for k in range(len(self.scorers))]
        for k, component in enumerate(self.spec.components):
            if isinstance(component, ProcessRewardModelComponent) and component.combine == "renorm":
                from rlcore.rewards.process import renorm

                outcome = values[self.names.index(component.outcome_component)]
                values[k] = [renorm(o, p) for o, p in zip(outcome, values[k])]
        return values

    def groups(self, batch: Batch) -> list[Any]:
        """The group of each row: the group column's value, else the prompt."""
        column = self.spec.group_column
        if column is None:
            return batch.prompt_texts
        return [json.dumps(row.get(column), sort_keys=True, default=str) for row in batch.rows]

    def combine(self, batch: Batch, values: list[list[float | None]]) -> tuple[list[float | None], list[float | None]]:
        """(raw weighted sums, normalised totals) from the component values of a batch."""
        raw = weighted_sum(values, self.weights)
        mode = self.spec.normalization
        if mode == "none":
            return raw, raw
        if mode == "group_zscore":
            return raw, group_zscore(raw, self.groups(batch))
        if mode == "normalize_then_sum":
            return raw, self._decoupled(batch, raw, values)
        return raw, self._par(batch, raw)

    def _decoupled(self, batch: Batch, raw: list[float | None], values: list[list[float | None]]) -> list[float | None]:
        """TRL's ``multi_objective_aggregation="normalize_then_sum"`` (GDPO) before its batch normalisation: each
        component z-scored within its group with TRL's sample std (``nanstd``), then weighted and summed; a row
        that some component scores but none has a z-score for sums to 0, as TRL's ``nansum`` does."""
        groups = self.groups(batch)
        summed = weighted_sum([group_zscore(v, groups, ddof=1) for v in values], self.weights)
        return [None if r is None else (0.0 if z is None else z) for r, z in zip(raw, summed)]

    def measure(self, batch: Batch) -> Batch:
        """The batch as this spec scores it. For PAR the completion and its references must be measured alike,
        and references come as text: so under PAR every length in tokens is counted from the text with the
        policy's tokenizer (``token_counter``), never from TRL's ids (which end with EOS), and in words when no
        tokenizer is given — for completions and references both."""
        if self.spec.normalization != "par":
            return batch
        count = self.token_counter
        n_tokens = [count(t) for t in batch.completion_texts] if count is not None else [None] * len(batch.completions)
        return Batch(prompts=batch.prompts, completions=batch.completions, prompt_texts=batch.prompt_texts,
                     completion_texts=batch.completion_texts, rows=batch.rows, n_tokens=n_tokens)

    def _par(self, batch: Batch, raw: list[float | None]) -> list[float | None]:
        """PAR with M references per prompt: ``(1/M) sum_m sigmoid(r(x, y) - r(x, y_ref_m))``; each reference is
        scored as a completion of the same prompt and row (same components, conditions, length unit)."""
        column, as_messages = self.spec.par_reference_column, batch.conversational
        row_keys: list[list[tuple[str, str]]] = []
        slots: dict[tuple[str, str], tuple[int, Any]] = {}
        for i, row in enumerate(batch.rows):
            keys = []
            for ref in reference_responses(row.get(column)):
                if as_messages and isinstance(ref, str):
                    ref = [{"role": "assistant", "content": ref}]
                key = (batch.prompt_texts[i], json.dumps(ref, sort_keys=True, default=str))
                slots.setdefault(key, (i, ref))
                keys.append(key)
            row_keys.append(keys)
        if not slots:
            return [None] * len(raw)
        firsts = [i for i, _ in slots.values()]
        references = [ref for _, ref in slots.values()]
        ref_batch = self.measure(Batch(
            prompts=[batch.prompts[i] for i in firsts], completions=references,
            prompt_texts=[batch.prompt_texts[i] for i in firsts],
            completion_texts=[completion_text(r) for r in references],
            rows=[batch.rows[i] for i in firsts], n_tokens=[None] * len(firsts),
        ))
        ref_raw = dict(zip(slots, weighted_sum(self.component_values(ref_batch), self.weights)))
        out: list[float | None] = []
        for value, keys in zip(raw, row_keys):
            reference_rewards = [ref_raw[k] for k in keys if ref_raw[k] is not None]
            out.append(None if value is None or not reference_rewards else par(value, reference_rewards))
        return out

    def score_batch(self, batch: Batch) -> list[ScoredRow]:
        batch = self.measure(batch)
        values = self.component_values(batch)
        raw, totals = self.combine(batch, values)
        return [
            ScoredRow(index=i, total=totals[i], raw_total=raw[i],
                      components={name: values[k][i] for k, name in enumerate(self.names)})
            for i in range(len(batch.completions))
        ]


def _rebuild_engine(spec: RewardSpec, judge, token_counter=None) -> RewardEngine:
    return RewardEngine(spec, judge=judge, token_counter=token_counter, checked=True)  # checked when first built


class TokenCounter:
    """Counts a text's tokens with a tokenizer, no special tokens added; picklable (unlike a lambda)."""

    def __init__(self, tokenizer: Any) -> None:
        self.tokenizer = tokenizer

    def __call__(self, text: str) -> int:
        return len(self.tokenizer(text, add_special_tokens=False)["input_ids"])


def reference_responses(value: Any) -> list[Any]:
    """The reference responses a PAR column holds: one text (or message list), or a list of them; blanks and
    None are left out.

    >>> reference_responses("a"), reference_responses(["a", " ", None, "b"]), reference_responses(None)
    (['a'], ['a', 'b'], [])
    >>> reference_responses([{"role": "assistant", "content": "a"}])
    [[{'role': 'assistant', 'content': 'a'}]]
    """
    if value is None:
        return []
    if isinstance(value, dict) or (isinstance(value, list) and value and all(isinstance(m, dict) for m in value)):
        return [value]  # one conversational reference
    items = value if isinstance(value, (list, tuple)) else [value]
    return [item for item in items if item is not None and completion_text(item).strip()]


def rows_to_batch(rows: Sequence[Mapping[str, Any]], *, source: str = "row") -> Batch:
    """A batch from dataset rows that hold ``prompt`` and ``completion`` (or ``response``), plus columns."""
    prompts, completions, columns = [], [], {}
    keys: list[str] = sorted({k for row in rows for k in row if k not in ("prompt", "completion", "response",
                                                                        "completion_ids")})
    ids: list[list[int]] | None = [] if rows and all("completion_ids" in r for r in rows) else None
    for n, row in enumerate(rows):
        if "completion" in row:
            completions.append(row["completion"])
        elif "response" in row:
            completions.append(row["response"])
        else:
            raise UserError(f"{source} {n + 1}: no 'completion' (or 'response') field to score")
        prompts.append(row.get("prompt", ""))
        if ids is not None:
            ids.append(row["completion_ids"])
    for key in keys:
        columns[key] = [row.get(key) for row in rows]
    return make_batch(prompts, completions, ids, columns)


def score_rows(spec: RewardSpec, rows: Sequence[Mapping[str, Any]], *, judge=None,
               token_counter: Callable[[str], int] | None = None) -> list[ScoredRow]:
    """Score dataset rows (``prompt``, ``completion`` and columns) with a spec: total and every component.

    Rows with the same prompt form a group for the group normalisations, as GRPO's generations do.
    ``token_counter`` (e.g. ``TokenCounter(policy_tokenizer)``) measures PAR's completions and references.
    """
    return RewardEngine(spec, judge=judge, token_counter=token_counter).score_batch(rows_to_batch(rows))
