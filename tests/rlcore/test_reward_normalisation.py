"""normalize_then_sum is TRL's GDPO (multi_objective_aggregation="normalize_then_sum"): each reward z-scored
within its prompt's group with the sample std, weighted and summed, then normalised over the batch. Expected
values are computed here with numpy from that definition."""

import warnings

import numpy as np
import pytest

from rlcore.errors import UserError
from rlcore.rewards import RewardSpec, score_rows, validate_spec
from rlcore.rewards.trl_adapter import build_reward_funcs, trl_aggregation

SPEC = dict(name="gdpo", normalization="normalize_then_sum", components=[
    {"kind": "length_penalty", "name": "overlong", "max_length": 10, "cache_length": 10, "unit": "chars",
     "weight": 0.5},
    {"kind": "verifier", "name": "correct", "reference_column": "answer", "mode": "numeric", "weight": 2.0,
     "when": {"column": "task", "equals": "math"}}])
ROWS = [{"prompt": "a", "completion": c, "answer": "4", "task": "math"} for c in ("4", "x 4", "5", "4444444")] + [
    {"prompt": "b", "completion": c, "answer": None, "task": "chat"} for c in ("hi", "hello", "hey there")]


def gdpo_by_hand(per_component: np.ndarray, weights: np.ndarray, groups: list[str]) -> np.ndarray:
    """TRL's normalize_then_sum before the batch step: nan-aware group mean and Bessel std, eps 1e-4, nansum."""
    z = np.full_like(per_component, np.nan)
    for g in set(groups):
        idx = [i for i, h in enumerate(groups) if h == g]
        block = per_component[idx]
        with warnings.catch_warnings():  # the chat group has no verifier values: NaN, as in TRL
            warnings.simplefilter("ignore", RuntimeWarning)
            mean = np.nanmean(block, axis=0)
            std = np.nanstd(block, axis=0, ddof=1)
        z[idx] = (block - mean) / (std + 1e-4)
    return np.nansum(z * weights, axis=1)


def test_it_z_scores_each_component_in_its_group_then_sums_as_trl_gdpo():
    nan = np.nan
    per_component = np.array([[-0.1, 1], [-0.3, 1], [-0.1, 0], [-0.7, 0],
                              [-0.2, nan], [-0.5, nan], [-0.9, nan]])
    expected = gdpo_by_hand(per_component, np.array([0.5, 2.0]), ["a"] * 4 + ["b"] * 3)
    scored = score_rows(RewardSpec(**SPEC), ROWS)
    assert [[s.components["overlong"], s.components["correct"]] for s in scored] == [
        [v if not np.isnan(v) else None for v in row] for row in per_component.tolist()]
    assert [s.total for s in scored] == pytest.approx(expected.tolist(), abs=1e-9)


def test_it_hands_trl_one_function_per_component_with_gdpo_aggregation():
    spec = RewardSpec(**SPEC)
    funcs, weights = build_reward_funcs(spec)
    assert [f.__name__ for f in funcs] == ["overlong", "correct"] and weights == [0.5, 2.0]
    assert trl_aggregation(spec) == "normalize_then_sum"
    assert trl_aggregation(RewardSpec(**{**SPEC, "normalization": "group_zscore"})) == "sum_then_normalize"


def test_it_refuses_a_group_column_trl_gdpo_cannot_honour():
    spec = RewardSpec(**SPEC, group_column="task")
    with pytest.raises(UserError, match="group_column': normalize_then_sum .*groups the completions of each prompt"):
        validate_spec(spec)
