"""A RewardSpec as TRL 1.x ``reward_funcs`` + ``reward_weights`` for ``GRPOTrainer``.

TRL calls each reward function as ``f(prompts=..., completions=..., completion_ids=..., **columns,
trainer_state=..., log_extra=..., log_metric=...)`` with one entry per completion, turns a returned None into
NaN (left out of the weighted ``nansum`` and of ``rewards/<name>/mean``), names the metric after the function's
``__name__``, and sums the functions' outputs with ``reward_weights``.

- normalisation ``none``: one function per component, named after it, with the component's weight. TRL's
  weighted sum is then exactly the spec's total.
- ``normalize_then_sum``: TRL's own GDPO (``multi_objective_aggregation="normalize_then_sum"``, which
  :func:`trl_aggregation` gives ``GRPOConfig``): one function per component with its weight, as for ``none``;
  TRL z-scores each function within the prompt's group, sums them with the weights and normalises the sum over
  the batch.
- ``group_zscore``, ``par`` need every component at once, so the first function, named ``total``, returns the
  normalised total with weight 1, and one function per component follows with weight 0 — only there so that
  TRL logs ``rewards/<component>/mean``. The components are computed once per batch: the component functions
  read what ``total`` computed for the same ``completions`` list. TRL's default
  ``multi_objective_aggregation="sum_then_normalize"`` goes with these.

>>> spec = RewardSpec(name="fmt", components=[
...     {"kind": "verifier", "name": "correct", "reference_column": "answer", "mode": "numeric", "weight": 2.0},
...     {"kind": "length_penalty", "name": "overlong", "max_length": 8, "cache_length": 4, "weight": 1.0,
...      "when": {"column": "task", "equals": "chat"}}])
>>> funcs, weights = build_reward_funcs(spec)
>>> [f.__name__ for f in funcs], weights
(['correct', 'overlong'], [2.0, 1.0])
>>> funcs[1](prompts=["p", "p"], completions=["4", "a b c d e f"], completion_ids=[[1], [1, 2, 3, 4, 5, 6]],
...          answer=["4", "4"], task=["math", "chat"])
[None, -0.5]
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from rlcore.rewards.check import TOTAL_NAME
from rlcore.rewards.engine import Batch, RewardEngine, make_batch
from rlcore.rewards.spec import RewardSpec


class _BatchMemo:
    """What was computed for the batch TRL is scoring now, shared by the functions of one spec.

    TRL passes the same ``prompts`` and ``completions`` list objects to every reward function of a step, so
    identity tells the functions they are looking at the same batch. The memo holds those objects, so their
    ids cannot be reused while it remembers them.
    """

    def __init__(self, engine: RewardEngine) -> None:
        self.engine = engine
        self._key: tuple[Any, Any] | None = None
        self.batch: Batch | None = None
        self.values: list[list[float | None] | None] = []
        self.totals: list[float | None] | None = None

    def batch_for(self, prompts, completions, completion_ids, columns) -> Batch:
        if self._key is None or self._key[0] is not prompts or self._key[1] is not completions:
            self._key = (prompts, completions)
            self.batch = self.engine.measure(make_batch(prompts, completions, completion_ids, columns))
            self.values = [None] * len(self.engine.scorers)
            self.totals = None
        return self.batch

    def component(self, k: int, batch: Batch) -> list[float | None]:
        if self.values[k] is None:
            self.values[k] = self.engine.component(k, batch)
        return self.values[k]

    def total(self, batch: Batch) -> list[float | None]:
        if self.totals is None:
            values = [self.component(k, batch) for k in range(len(self.values))]
            self.totals = self.engine.combine(batch, values)[1]
        return self.totals

    def __getstate__(self) -> dict:
        return {"engine": self.engine, "_key": None, "batch": None, "values": [], "totals": None}


class ComponentReward:
    """A TRL reward function for one component of a spec; ``__name__`` is the component's name."""

    def __init__(self, memo: _BatchMemo, k: int) -> None:
        self._memo, self._k = memo, k
        self.__name__ = memo.engine.names[k]

    def __call__(self, prompts: Sequence[Any], completions: Sequence[Any],
                 completion_ids: Sequence[Sequence[int]] | None = None, **kwargs: Any) -> list[float | None]:
        batch = self._memo.batch_for(prompts, completions, completion_ids, kwargs)
        return list(self._memo.component(self._k, batch))


class TotalReward:
    """A TRL reward function returning the spec's normalised total; ``__name__`` is ``total``."""

    def __init__(self, memo: _BatchMemo) -> None:
        self._memo = memo
        self.__name__ = TOTAL_NAME

    def __call__(self, prompts: Sequence[Any], completions: Sequence[Any],
                 completion_ids: Sequence[Sequence[int]] | None = None, **kwargs: Any) -> list[float | None]:
        batch = self._memo.batch_for(prompts, completions, completion_ids, kwargs)
        return list(self._memo.total(batch))


def trl_aggregation(spec: RewardSpec) -> str:
    """The ``GRPOConfig.multi_objective_aggregation`` that goes with the functions of :func:`build_reward_funcs`.

    >>> trl_aggregation(RewardSpec(name="s", normalization="normalize_then_sum", components=[
    ...     {"kind": "length_penalty", "name": "long", "max_length": 8, "cache_length": 4}]))
    'normalize_then_sum'
    """
    return "normalize_then_sum" if spec.normalization == "normalize_then_sum" else "sum_then_normalize"


def build_reward_funcs(spec: RewardSpec, *, judge=None, token_counter: Callable[[str], int] | None = None,
                       checked: bool = False) -> tuple[list[Callable], list[float]]:
    """TRL ``reward_funcs`` and ``reward_weights`` for a spec (validated here, UserError when it is wrong, unless
    ``checked``: the caller validated it against the dataset already).

    ``judge`` grades the criteria without a rule of ``rubric_judge`` components (any
    :class:`rlcore.judges.base.Judge`). ``token_counter`` (``engine.TokenCounter(policy_tokenizer)``) measures a
    completion and its PAR references alike; without it both are measured in words.
    """
    memo = _BatchMemo(RewardEngine(spec, judge=judge, token_counter=token_counter, checked=checked))
    components = [ComponentReward(memo, k) for k in range(len(spec.components))]
    if spec.normalization in ("none", "normalize_then_sum"):
        return list(components), [c.weight for c in spec.components]
    return [TotalReward(memo), *components], [1.0] + [0.0] * len(components)
