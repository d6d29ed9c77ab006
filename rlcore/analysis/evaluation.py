"""Where a reward model (or an LM judge, or any scored source) can be trusted: accuracy on held-out
labels per group, and a reliability diagram.

A source's *margin* on a labelled pair is ``score(chosen) - score(rejected)``. Per group (prompt
category, annotator, a routing feature, a response-length bucket, ...):

- ``accuracy`` = (pairs with margin > 0 + 1/2 * pairs with margin = 0) / n over the decisive pairs
  (tie labels are left out and counted), with ``n_pairs`` and a 95% Wilson interval
  (``rlcore.training.calibration.wilson_interval``); a group with fewer than ``min_pairs`` pairs
  keeps its accuracy and count but gets no interval, and says so;
- the reliability diagram bins the confidence ``max(p, 1 - p)``, ``p = sigmoid(margin)`` (a
  Bradley-Terry reading of the margin), into equal-width bins over [0.5, 1]: count, mean confidence
  and accuracy per bin (``rlcore.training.calibration.reliability_bins``), and the ECE over them.

Length buckets use the mean character length of the two responses; ``longer_side`` says whether the
chosen response was the longer one (a length-biased source is right mostly where it was).

>>> pairs = [EvaluatedPair(margin=m, groups={"category": c}) for m, c in
...          [(1.0, "math"), (2.0, "math"), (-1.0, "chat"), (0.5, "chat")]]
>>> e = evaluate_pairs(pairs, source="rm", min_pairs=2)
>>> e.overall.accuracy, e.overall.n_pairs
(0.75, 4)
>>> [(g.value, g.accuracy, g.n_pairs) for g in e.by_group["category"]]
[('chat', 0.5, 2), ('math', 1.0, 2)]
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from pydantic import BaseModel, Field

from rlcore.analysis.inputs import LabelledPair, ScoreTable
from rlcore.errors import UserError
from rlcore.training.calibration import pair_metrics, reliability_bins, wilson_interval

LENGTH_EDGES = (100, 300, 1000, 3000)  # characters


class EvaluatedPair(BaseModel):
    """One held-out labelled pair as a source scored it."""

    margin: float = Field(description="score(chosen) - score(rejected)")
    tie: bool = False
    groups: dict[str, str] = Field(default_factory=dict, description="group name -> this pair's value")


class GroupAccuracy(BaseModel):
    group: str
    value: str
    accuracy: float | None = Field(description="None when the group has only tie labels")
    ci_low: float | None = Field(description="95% Wilson interval; None below min_pairs")
    ci_high: float | None
    n_pairs: int = Field(description="decisive pairs the accuracy rests on")
    n_ties_excluded: int
    note: str | None = None


class ReliabilityBin(BaseModel):
    low: float
    high: float
    count: int
    mean_confidence: float
    accuracy: float


class RewardModelEvaluation(BaseModel):
    """A source's held-out accuracy overall and per group, and its reliability diagram."""

    source: str
    overall: GroupAccuracy
    by_group: dict[str, list[GroupAccuracy]]
    reliability: list[ReliabilityBin] = Field(description="non-empty confidence bins over [0.5, 1]")
    ece: float | None = Field(description="expected calibration error over those bins")
    n_pairs_unscored: int = Field(0, description="labelled pairs left out: the source did not score a response")
    min_pairs: int


def _group_accuracy(group: str, value: str, pairs: Sequence[EvaluatedPair], min_pairs: int) -> GroupAccuracy:
    decisive = [p.margin for p in pairs if not p.tie]
    ties = len(pairs) - len(decisive)
    n = len(decisive)
    if n == 0:
        return GroupAccuracy(group=group, value=value, accuracy=None, ci_low=None, ci_high=None, n_pairs=0,
                             n_ties_excluded=ties, note="only tie labels: nothing to be right about")
    correct = sum(1.0 if m > 0 else (0.5 if m == 0 else 0.0) for m in decisive)
    if n < min_pairs:
        return GroupAccuracy(group=group, value=value, accuracy=correct / n, ci_low=None, ci_high=None, n_pairs=n,
                             n_ties_excluded=ties, note=f"fewer than {min_pairs} pairs: no interval")
    low, high = wilson_interval(correct, n)
    return GroupAccuracy(group=group, value=value, accuracy=correct / n, ci_low=low, ci_high=high, n_pairs=n,
                         n_ties_excluded=ties)


def evaluate_pairs(pairs: Sequence[EvaluatedPair], *, source: str = "source", min_pairs: int = 10, bins: int = 10,
                   n_pairs_unscored: int = 0) -> RewardModelEvaluation:
    """Accuracy with interval and count overall and per group, and the reliability diagram.

    Refuses when fewer than ``min_pairs`` decisive pairs are held out: an interval on so few says nothing.
    """
    decisive = [p.margin for p in pairs if not p.tie]
    if len(decisive) < min_pairs:
        raise UserError(f"source {source!r}: {len(decisive)} decisive held-out labelled pairs "
                        f"({len(pairs) - len(decisive)} ties left out); an accuracy interval needs at least {min_pairs}")
    overall = _group_accuracy("all", "all", pairs, min_pairs)
    by_group: dict[str, list[GroupAccuracy]] = {}
    names = sorted({name for p in pairs for name in p.groups})
    for name in names:
        members: dict[str, list[EvaluatedPair]] = {}
        for p in pairs:
            members.setdefault(p.groups.get(name, "(none)"), []).append(p)
        by_group[name] = [_group_accuracy(name, value, group, min_pairs) for value, group in sorted(members.items())]
    metrics = pair_metrics([p.margin for p in pairs], ties=[p.tie for p in pairs])
    return RewardModelEvaluation(source=source, overall=overall, by_group=by_group,
                                 reliability=[ReliabilityBin(**b) for b in reliability_bins(decisive, bins)],
                                 ece=metrics["ece"], n_pairs_unscored=n_pairs_unscored, min_pairs=min_pairs)


def length_bucket(mean_length: float, edges: Sequence[int] = LENGTH_EDGES) -> str:
    """``'<100'``, ``'100-300'``, ..., ``'>=3000'`` characters.

    >>> length_bucket(50), length_bucket(300), length_bucket(5000)
    ('<100', '300-1000', '>=3000')
    """
    if mean_length < edges[0]:
        return f"<{edges[0]}"
    for low, high in zip(edges, edges[1:]):
        if low <= mean_length < high:
            return f"{low}-{high}"
    return f">={edges[-1]}"


def _attribute(pair: LabelledPair, path: str) -> Any:
    if path == "annotator":
        return pair.annotator or None
    value: Any = pair.attributes
    for part in path.split("."):
        if not isinstance(value, dict) or part not in value:
            return None
        value = value[part]
    return value


def pairs_from_scores(table: ScoreTable, labelled: Sequence[LabelledPair],
                      groups: Sequence[str] = ()) -> tuple[list[EvaluatedPair], int]:
    """The source's margins on the labelled pairs it scored, with each pair's group values.

    ``groups`` are attribute paths (``annotator``, ``category``, ``provenance.category``, ...) or
    ``length`` (mean length bucket and ``longer_side``). Returns the pairs and how many were unscored.
    """
    out, unscored = [], 0
    for pair in labelled:
        chosen = table.scores.get((pair.prompt_id, pair.chosen_id))
        rejected = table.scores.get((pair.prompt_id, pair.rejected_id))
        if chosen is None or rejected is None:
            unscored += 1
            continue
        values: dict[str, str] = {}
        for name in groups:
            if name == "length":
                if pair.chosen_length is None or pair.rejected_length is None:
                    values["length"] = "(unknown)"
                    values["longer_side"] = "(unknown)"
                    continue
                values["length"] = length_bucket((pair.chosen_length + pair.rejected_length) / 2)
                values["longer_side"] = ("chosen longer" if pair.chosen_length > pair.rejected_length else
                                         "rejected longer" if pair.chosen_length < pair.rejected_length else "same length")
                continue
            value = _attribute(pair, name)
            values[name] = "(none)" if value is None else (value if isinstance(value, str) else str(value))
        out.append(EvaluatedPair(margin=chosen - rejected, tie=pair.tie, groups=values))
    if not out:
        raise UserError(f"source {table.name!r} scored both responses of none of the {len(labelled)} labelled pairs; "
                        "score the responses the labels name")
    return out, unscored


def evaluate_source(table: ScoreTable, labelled: Sequence[LabelledPair], groups: Sequence[str] = (),
                    min_pairs: int = 10, bins: int = 10) -> RewardModelEvaluation:
    """``evaluate_pairs`` on a score table and held-out labelled pairs."""
    if bins < 1:
        raise UserError(f"bins: expected a positive number of bins, got {bins}")
    pairs, unscored = pairs_from_scores(table, labelled, groups)
    return evaluate_pairs(pairs, source=table.name, min_pairs=min_pairs, bins=bins, n_pairs_unscored=unscored)
