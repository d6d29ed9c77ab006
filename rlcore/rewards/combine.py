"""Combining component rewards into one: weighted sums, group z-scores, PAR. Pure functions over lists,
where None means "does not apply" and is left out (like TRL's ``nansum`` / ``nanmean``).

>>> weighted_sum([[1.0, None, 0.0], [0.5, 0.5, None]], [2.0, 1.0])
[2.5, 0.5, 0.0]
>>> weighted_sum([[None], [None]], [1.0, 1.0])
[None]
>>> [round(v, 3) for v in group_zscore([1.0, 3.0, 10.0, 10.0], ["p", "p", "q", "q"])]
[-1.0, 1.0, 0.0, 0.0]
>>> [v if v is None else round(v, 3) for v in group_zscore([1.0, 3.0, 10.0], ["p", "p", "q"], ddof=1)]  # as TRL
[-0.707, 0.707, None]
>>> round(par(2.0, 2.0), 3), round(par(5.0, 1.0), 3), round(par(1.0, [0.0, 1.0, 2.0]), 3)
(0.5, 0.982, 0.5)
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Sequence

ZSCORE_EPS = 1e-4  # as TRL's GRPO advantage normalisation


def weighted_sum(per_component: Sequence[Sequence[float | None]], weights: Sequence[float]) -> list[float | None]:
    """Per row, the weighted sum of the components that apply; None where none applies."""
    if not per_component:
        return []
    out: list[float | None] = []
    for row_values in zip(*per_component):
        total, any_value = 0.0, False
        for value, weight in zip(row_values, weights):
            if value is not None and not math.isnan(value):
                total += weight * value
                any_value = True
        out.append(total if any_value else None)
    return out


def group_zscore(values: Sequence[float | None], groups: Sequence[Hashable], eps: float = ZSCORE_EPS,
                 ddof: int = 0) -> list[float | None]:
    """Each value minus its group's mean, over the group's standard deviation plus ``eps``.

    ``ddof=0``: the population std; ``ddof=1``: the sample std TRL's ``nanstd`` uses, where a group of one value has
    no std and gives None (TRL's NaN). None stays None and is left out of its group's statistics; a group of equal
    values gives zeros.
    """
    members: dict[Hashable, list[float]] = {}
    for value, group in zip(values, groups):
        if value is not None:
            members.setdefault(group, []).append(value)
    stats = {}
    for group, vals in members.items():
        mean = sum(vals) / len(vals)
        if len(vals) <= ddof:
            stats[group] = (mean, None)
            continue
        std = math.sqrt(sum((v - mean) ** 2 for v in vals) / (len(vals) - ddof))
        stats[group] = (mean, std)
    return [None if v is None or stats[g][1] is None else (v - stats[g][0]) / (stats[g][1] + eps)
            for v, g in zip(values, groups)]


def _sigmoid(x: float) -> float:
    if x >= 0:
        return 1.0 / (1.0 + math.exp(-x))
    e = math.exp(x)
    return e / (1.0 + e)


def par(reward: float, reference_rewards: float | Sequence[float]) -> float:
    """Preference As Reward shaping (Fu et al. 2025, eq. for M references): the mean over the references of
    ``sigmoid(reward - reference_reward_m)``, bounded in (0, 1); 0.5 when the reward equals every reference's."""
    if isinstance(reference_rewards, (int, float)):
        reference_rewards = [reference_rewards]
    if not reference_rewards:
        raise ValueError("PAR needs at least one reference reward")
    return sum(_sigmoid(reward - r) for r in reference_rewards) / len(reference_rewards)


def soft_overlong_penalty(length: int, max_length: int, cache_length: int, penalty: float = 1.0) -> float:
    """DAPO's soft overlong punishment: 0 up to ``max_length - cache_length``, linear to ``-penalty`` at max.

    >>> [soft_overlong_penalty(n, 100, 20) for n in (50, 80, 90, 100, 150)]
    [0.0, 0.0, -0.5, -1.0, -1.0]
    """
    start = max_length - cache_length
    if length <= start:
        return 0.0
    if length >= max_length or cache_length == 0:
        return -penalty
    return -penalty * (length - start) / cache_length
