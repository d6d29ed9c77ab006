"""Held-out metrics of a Bradley-Terry reward model: accuracy, margin, calibration; ensembles.

A reward model scores both sides of each held-out pair. Its *margin* is ``r(chosen) - r(rejected)``
and ``sigmoid(margin)`` is its probability that the chosen side wins. From the margins:

- ``accuracy``: fraction of pairs with a positive margin (ties count half);
- ``margin``: mean margin;
- ``brier``: mean of ``(1 - sigmoid(margin))**2`` (the label is always "chosen wins");
- ``ece``: expected calibration error over equal-width confidence bins, where the confidence of a pair
  is ``max(p, 1 - p)`` and it is correct when the side it favours is the chosen one;
- ``loss``: mean Bradley-Terry loss ``-log sigmoid(margin)``.

An ensemble scores a pair with the mean of its members' margins.

>>> m = pair_metrics([2.0, 1.0, -0.5])
>>> round(m["accuracy"], 3), round(m["margin"], 3)
(0.667, 0.833)
>>> ensemble_margins([[1.0, -1.0], [3.0, 0.0]])
[2.0, -0.5]
"""

from __future__ import annotations

import math
from collections.abc import Sequence


def sigmoid(x: float) -> float:
    """Numerically stable logistic function.

    >>> sigmoid(0.0), round(sigmoid(2.0), 4), sigmoid(-1000.0)
    (0.5, 0.8808, 0.0)
    """
    if x >= 0:
        return 1.0 / (1.0 + math.exp(-x))
    z = math.exp(x)
    return z / (1.0 + z)


def expected_calibration_error(margins: Sequence[float], bins: int = 10) -> float:
    """ECE of ``sigmoid(margin)`` as the probability that the chosen side wins.

    A perfectly confident and always right model has ECE 0; one that says 0.88 and is right every
    time is under-confident by 0.12:

    >>> expected_calibration_error([50.0, 50.0])
    0.0
    >>> round(expected_calibration_error([2.0, 2.0, 2.0]), 4)
    0.1192
    """
    if not margins:
        return float("nan")
    totals = [[0, 0.0, 0.0] for _ in range(bins)]  # count, summed confidence, summed correctness
    for m in margins:
        p = sigmoid(m)
        confidence = max(p, 1.0 - p)
        correct = 1.0 if m > 0 else (0.5 if m == 0 else 0.0)
        index = min(int((confidence - 0.5) * 2 * bins), bins - 1)
        totals[index][0] += 1
        totals[index][1] += confidence
        totals[index][2] += correct
    n = len(margins)
    return sum(abs(conf - corr) / n for count, conf, corr in totals if count)


def pair_metrics(margins: Sequence[float]) -> dict[str, float]:
    """Accuracy, mean margin, Brier score, ECE and Bradley-Terry loss of held-out margins.

    >>> m = pair_metrics([1.0, -1.0])
    >>> m["accuracy"], m["margin"], round(m["brier"], 4), round(m["loss"], 4)
    (0.5, 0.0, 0.3034, 0.8133)
    """
    n = len(margins)
    if n == 0:
        raise ValueError("pair_metrics needs at least one held-out pair")
    return {
        "accuracy": sum(1.0 if m > 0 else (0.5 if m == 0 else 0.0) for m in margins) / n,
        "margin": sum(margins) / n,
        "brier": sum((1.0 - sigmoid(m)) ** 2 for m in margins) / n,
        "ece": expected_calibration_error(margins),
        "loss": sum(-math.log(max(sigmoid(m), 1e-300)) for m in margins) / n,
    }


def ensemble_margins(member_margins: Sequence[Sequence[float]]) -> list[float]:
    """The ensemble's margin on each pair: the mean of its members' margins.

    >>> ensemble_margins([[1.0], [2.0], [3.0]])
    [2.0]
    """
    if not member_margins:
        raise ValueError("an ensemble needs at least one member")
    length = len(member_margins[0])
    if any(len(m) != length for m in member_margins):
        raise ValueError("every ensemble member must score the same held-out pairs")
    k = len(member_margins)
    return [sum(m[i] for m in member_margins) / k for i in range(length)]
