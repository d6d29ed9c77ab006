"""Held-out metrics of a Bradley-Terry reward model: accuracy, margin, calibration; ensembles.

A reward model scores both sides of each held-out pair. Its *margin* is ``r(chosen) - r(rejected)``
and ``sigmoid(margin)`` is its probability that the chosen side wins. A *tie* pair (the label said
neither side is better; Bradley-Terry target 1/2) has no winner to get right, so ties are left out of
``accuracy``, ``brier`` and ``ece`` and counted in ``n_ties_excluded``. From the margins:

- ``accuracy``: fraction of decisive pairs with a positive margin (a zero margin counts half), with
  ``n_pairs`` (the decisive pairs it rests on) and a 95% Wilson interval ``accuracy_ci_low/high``;
- ``margin``: mean margin of the decisive pairs;
- ``brier``: mean of ``(1 - sigmoid(margin))**2`` over decisive pairs (the label is "chosen wins");
- ``ece``: expected calibration error over equal-width confidence bins, where the confidence of a pair
  is ``max(p, 1 - p)`` and it is correct when the side it favours is the chosen one;
- ``loss``: mean Bradley-Terry loss over all pairs: ``-log sigmoid(margin)`` for a decisive pair and
  ``-1/2 log sigmoid(margin) - 1/2 log sigmoid(-margin)`` for a tie (the loss the model trained on).

An ensemble scores a pair with the mean of its members' margins.

>>> m = pair_metrics([2.0, 1.0, -0.5])
>>> round(m["accuracy"], 3), round(m["margin"], 3), m["n_pairs"], m["n_ties_excluded"]
(0.667, 0.833, 3, 0)
>>> m = pair_metrics([2.0, 1.0, -0.5, 0.3], ties=[False, False, False, True])
>>> round(m["accuracy"], 3), m["n_pairs"], m["n_ties_excluded"]
(0.667, 3, 1)
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
    n = len(margins)
    return sum(abs(b["mean_confidence"] - b["accuracy"]) * b["count"] / n for b in reliability_bins(margins, bins))


def reliability_bins(margins: Sequence[float], bins: int = 10) -> list[dict[str, float | int]]:
    """The reliability diagram behind the ECE: for each non-empty equal-width bin of confidence
    ``max(p, 1 - p)`` over [0.5, 1] (``p = sigmoid(margin)``), its edges, count, mean confidence and
    accuracy (the share of its pairs whose favoured side is the chosen one; a zero margin counts half).

    >>> [(b["low"], b["count"], round(b["mean_confidence"], 4), b["accuracy"]) for b in reliability_bins([2.0, -2.0, 0.1], 5)]
    [(0.5, 1, 0.525, 1.0), (0.8, 2, 0.8808, 0.5)]
    """
    totals = [[0, 0.0, 0.0] for _ in range(bins)]  # count, summed confidence, summed correctness
    for m in margins:
        p = sigmoid(m)
        confidence = max(p, 1.0 - p)
        correct = 1.0 if m > 0 else (0.5 if m == 0 else 0.0)
        index = min(int((confidence - 0.5) * 2 * bins), bins - 1)
        totals[index][0] += 1
        totals[index][1] += confidence
        totals[index][2] += correct
    return [{"low": 0.5 + i / (2 * bins), "high": 0.5 + (i + 1) / (2 * bins), "count": count,
             "mean_confidence": conf / count, "accuracy": corr / count}
            for i, (count, conf, corr) in enumerate(totals) if count]


def wilson_interval(successes: float, n: int, z: float = 1.959963984540054) -> tuple[float, float]:
    """Wilson score interval of a proportion ``successes / n`` (95% by default).

    It stays inside [0, 1] and is sensible for small ``n`` and for 0 or n successes, where the normal
    interval collapses to a point:

    >>> [round(x, 4) for x in wilson_interval(8, 10)]
    [0.4902, 0.9433]
    >>> [round(x, 4) for x in wilson_interval(2, 2)]
    [0.3424, 1.0]
    """
    if n <= 0:
        return (float("nan"), float("nan"))
    p = successes / n
    denominator = 1.0 + z * z / n
    centre = (p + z * z / (2 * n)) / denominator
    half = z / denominator * math.sqrt(p * (1.0 - p) / n + z * z / (4 * n * n))
    return (max(0.0, centre - half), min(1.0, centre + half))


def _pair_loss(margin: float, tie: bool) -> float:
    win = -math.log(max(sigmoid(margin), 1e-300))
    if not tie:
        return win
    return 0.5 * win + 0.5 * -math.log(max(sigmoid(-margin), 1e-300))


def pair_metrics(margins: Sequence[float], ties: Sequence[bool] | None = None) -> dict[str, float | int | None]:
    """Accuracy (with its pair count and Wilson interval), mean margin, Brier, ECE and loss of held-out margins.

    ``ties[i]`` marks pair ``i`` as a tie: it is scored only by the loss (target 1/2). When every pair is a
    tie, the win-based figures are None (there is nothing to be right about).

    >>> m = pair_metrics([1.0, -1.0])
    >>> m["accuracy"], m["margin"], round(m["brier"], 4), round(m["loss"], 4)
    (0.5, 0.0, 0.3034, 0.8133)
    >>> m = pair_metrics([0.0], ties=[True])
    >>> m["accuracy"], m["n_pairs"], m["n_ties_excluded"], round(m["loss"], 4)
    (None, 0, 1, 0.6931)
    """
    n_all = len(margins)
    if n_all == 0:
        raise ValueError("pair_metrics needs at least one held-out pair")
    ties = list(ties) if ties is not None else [False] * n_all
    if len(ties) != n_all:
        raise ValueError("pair_metrics needs one tie flag per margin")
    decisive = [m for m, tie in zip(margins, ties) if not tie]
    n = len(decisive)
    loss = sum(_pair_loss(m, tie) for m, tie in zip(margins, ties)) / n_all
    if n == 0:
        return {"accuracy": None, "accuracy_ci_low": None, "accuracy_ci_high": None, "n_pairs": 0,
                "n_ties_excluded": n_all, "margin": None, "brier": None, "ece": None, "loss": loss}
    correct = sum(1.0 if m > 0 else (0.5 if m == 0 else 0.0) for m in decisive)
    low, high = wilson_interval(correct, n)
    return {
        "accuracy": correct / n,
        "accuracy_ci_low": low,
        "accuracy_ci_high": high,
        "n_pairs": n,
        "n_ties_excluded": n_all - n,
        "margin": sum(decisive) / n,
        "brier": sum((1.0 - sigmoid(m)) ** 2 for m in decisive) / n,
        "ece": expected_calibration_error(decisive),
        "loss": loss,
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
