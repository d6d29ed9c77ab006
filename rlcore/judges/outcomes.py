"""What a labelling run's verdicts are worth: the outcome of each comparison, and the counts per run.

A judge asked in both orders (:mod:`rlcore.judges.debias`) can answer without saying anything: when
its two orders disagree, the combined label is a tie (pairwise, MT-Bench's rule) or an averaged
ranking, which looks like a label and carries no preference. So every comparison gets one outcome:

- ``verdict``: both orders gave the same A/B pick (or the same ranking): a usable verdict;
- ``tie``: both orders said tie: a genuine tie;
- order disagreements, which a pairwise run turns into ties (a ranking run averages the positions):
  ``disagree_first`` (the judge picked whichever response was shown first, both times),
  ``disagree_second`` (whichever was shown second, both times), ``disagree_tie`` (one order said tie,
  the other picked one), ``disagree`` (ranking: the two orderings differ);
- no label: ``refused`` (an order was refused), ``call_failed`` (the call itself failed: unreachable,
  timed out, 5xx), ``unparseable`` (a reply without a verdict), ``not_judged`` (no result at all:
  the job ended before reaching it).

:func:`summarize_outcomes` counts them and warns when most verdicts contradict themselves, with a
Wilson interval on that share (the judge is position-biased when one position wins, random otherwise).

>>> pair_outcome(forward_verdict="A", swapped_verdict="B", order_errors=[None, None])
'disagree_first'
>>> s = summarize_outcomes(["disagree_first"] * 3 + ["verdict"], mode="pairwise")
>>> s.usable, s.order_disagreements, s.contradictory_share, s.warning is not None
(1, 3, 0.75, True)
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from typing import Literal, get_args

from pydantic import BaseModel, ConfigDict, Field

from rlcore.training.calibration import wilson_interval  # the one Wilson interval in rlcore

Outcome = Literal["verdict", "tie", "disagree_first", "disagree_second", "disagree_tie", "disagree", "refused",
                  "call_failed", "unparseable", "not_judged"]
OUTCOMES: tuple[str, ...] = get_args(Outcome)
DISAGREEMENTS = ("disagree_first", "disagree_second", "disagree_tie", "disagree")
NO_LABEL = ("refused", "call_failed", "unparseable", "not_judged")

OUTCOME_TEXT: dict[str, str] = {
    "verdict": "usable verdict (both orders agree)",
    "tie": "genuine tie (both orders said tie)",
    "disagree_first": "orders disagree: picked the response shown first both times",
    "disagree_second": "orders disagree: picked the response shown second both times",
    "disagree_tie": "orders disagree: one order said tie, the other picked a response",
    "disagree": "orders disagree: the two rankings differ",
    "refused": "refused",
    "call_failed": "judge call failed",
    "unparseable": "reply without a verdict",
    "not_judged": "not judged (the job ended before reaching it)",
}

# What each mode makes of an order disagreement (rlcore.judges.debias), said on every summary.
DISAGREEMENTS_BECOME = {
    "pairwise": "recorded as ties (label 'tie', marked position bias): they carry no preference",
    "ranking": "recorded as the average of the two rankings (marked position bias)",
    "steps": "not possible: each step is graded once, in one order",
}
MOST = 0.5  # warn when more than this share of the answered comparisons disagree between orders


def order_failure(errors: Sequence[str | None]) -> Outcome:
    """Why an order gave no verdict, from the errors of the orders (refusal first, then a failed call).

    >>> order_failure(["judge call failed: could not reach ...", "judge refused: no"])
    'refused'
    >>> order_failure([None, "no verdict found in the reply"])
    'unparseable'
    """
    texts = [e or "" for e in errors]
    if any(t.startswith("judge refused") for t in texts):
        return "refused"
    if any(t.startswith("judge call failed") for t in texts):
        return "call_failed"
    return "unparseable"


def pair_outcome(*, forward_verdict: str | None, swapped_verdict: str | None,
                 order_errors: Sequence[str | None]) -> Outcome:
    """The outcome of one pair; ``swapped_verdict`` already mapped back to the request's labelling.

    >>> pair_outcome(forward_verdict="B", swapped_verdict="A", order_errors=[None, None])
    'disagree_second'
    >>> pair_outcome(forward_verdict="tie", swapped_verdict="tie", order_errors=[None, None])
    'tie'
    """
    if forward_verdict is None or swapped_verdict is None:
        return order_failure(order_errors)
    if forward_verdict == swapped_verdict:
        return "tie" if forward_verdict == "tie" else "verdict"
    if "tie" in (forward_verdict, swapped_verdict):
        return "disagree_tie"
    # As given the judge said A (shown first); swapped, B mapped back means it said A (shown first) again.
    return "disagree_first" if forward_verdict == "A" else "disagree_second"


def ranking_outcome(*, forward_verdict: list[int] | None, reversed_verdict: list[int] | None,
                    order_errors: Sequence[str | None]) -> Outcome:
    """The outcome of one ranking; ``reversed_verdict`` already mapped back to the request's indices."""
    if forward_verdict is None or reversed_verdict is None:
        return order_failure(order_errors)
    return "verdict" if list(forward_verdict) == list(reversed_verdict) else "disagree"


def line_outcome(row: dict, mode: Literal["pairwise", "ranking", "steps"]) -> Outcome:
    """The outcome of one line written by ``rlcore judge pairwise`` / ``judge rank``.

    >>> line_outcome({"verdict": None, "forward": {"error": "judge refused: no"}, "swapped": {}}, "pairwise")
    'refused'
    """
    if mode == "steps":  # ``judge steps``: grades for every step, or why a step has none
        if row.get("grades") is not None:
            return "verdict"
        return order_failure([(step or {}).get("error") for step in row.get("steps") or []] or [row.get("error")])
    second = "swapped" if mode == "pairwise" else "reversed"
    errors = [(row.get(order) or {}).get("error") for order in ("forward", second)]
    if row.get("verdict") is None:
        if row.get("forward_verdict") is not None and row.get(f"{second}_verdict") is not None:
            return "unparseable"  # both orders answered, yet no combined verdict: not a verdict we can read
        return order_failure(errors)
    if mode == "pairwise":
        return pair_outcome(forward_verdict=row.get("forward_verdict"), swapped_verdict=row.get("swapped_verdict"),
                            order_errors=errors)
    return ranking_outcome(forward_verdict=row.get("forward_verdict"), reversed_verdict=row.get("reversed_verdict"),
                           order_errors=errors)


class LabellingSummary(BaseModel):
    """The counts behind one labelling run's labels, and a warning when they carry little information."""

    model_config = ConfigDict(frozen=True)

    mode: Literal["pairwise", "ranking", "steps"] = Field(
        description="pairwise (both orders), ranking (as given, reversed) or steps (each step graded once)")
    n_comparisons: int = Field(description="comparisons with an outcome")
    counts: dict[str, int] = Field(description="comparisons per outcome (every outcome, zeros included)")
    usable: int = Field(description="usable verdicts: both orders gave the same pick or ranking")
    genuine_ties: int = Field(description="both orders said tie")
    order_disagreements: int = Field(description="the orders disagreed (see disagreements_become)")
    disagreements_become: str = Field(description="what the run recorded for an order disagreement")
    refused: int = Field(description="an order was refused: no label")
    unparseable: int = Field(description="a reply had no verdict: no label")
    call_failed: int = Field(description="a judge call failed (unreachable, timeout, server error): no label")
    not_judged: int = Field(description="no result: the job ended before reaching the comparison")
    answered: int = Field(description="comparisons where both orders gave a verdict (usable + ties + disagreements)")
    contradictory_share: float | None = Field(description="order disagreements / answered; None when none answered")
    contradictory_interval: tuple[float, float] | None = Field(description="95% Wilson interval on that share")
    warning: str | None = Field(description="set when most answered comparisons disagree between orders")

    @property
    def no_label(self) -> int:
        return self.refused + self.unparseable + self.call_failed + self.not_judged

    def describe(self) -> str:
        """One line for a log or a CLI summary."""
        c = self.counts
        detail = (f" [picked first shown {c['disagree_first']}, second shown {c['disagree_second']}, "
                  f"tie vs pick {c['disagree_tie']}]" if self.mode == "pairwise" else "")
        return (f"{self.usable} usable verdicts, {self.order_disagreements} order disagreements{detail} "
                f"{self.disagreements_become.split(':')[0]}, {self.genuine_ties} genuine ties, {self.refused} refused, "
                f"{self.unparseable} unparseable, {self.call_failed} failed calls, {self.not_judged} not judged "
                f"(of {self.n_comparisons})")


def summarize_outcomes(outcomes: Iterable[str], *, mode: Literal["pairwise", "ranking", "steps"]) -> LabellingSummary:
    """Count outcomes (see the module) and warn when more than half the answered comparisons disagree
    between orders. An unknown outcome raises ValueError (a caller's bug, not a judge's).

    >>> s = summarize_outcomes(["verdict", "tie", "refused"], mode="pairwise")
    >>> (s.usable, s.genuine_ties, s.refused, s.answered, s.warning)
    (1, 1, 1, 2, None)
    """
    counter = Counter(outcomes)
    unknown = set(counter) - set(OUTCOMES)
    if unknown:
        raise ValueError(f"unknown judging outcome(s): {sorted(unknown)}")
    counts = {o: counter.get(o, 0) for o in OUTCOMES}
    disagreements = sum(counts[o] for o in DISAGREEMENTS)
    answered = counts["verdict"] + counts["tie"] + disagreements
    share = disagreements / answered if answered else None
    interval = wilson_interval(disagreements, answered) if answered else None
    warning = None
    if share is not None and share > MOST:
        lo, hi = interval
        warning = (f"Most of this judge's verdicts contradict themselves: in {disagreements} of {answered} "
                   f"comparisons ({share:.0%}; 95% CI {lo:.0%} to {hi:.0%}) its two orders disagreed, so they were "
                   f"{DISAGREEMENTS_BECOME[mode]}. ")
        first, second = counts["disagree_first"], counts["disagree_second"]
        if first + second:
            if max(first, second) >= 0.8 * (first + second):
                shown = "first" if first >= second else "second"
                warning += (f"It picked whichever response was shown {shown} ({max(first, second)} of "
                            f"{first + second} opposite picks): position bias. ")
            else:
                warning += (f"It picked the first-shown response {first} times and the second-shown {second} "
                            "times: close to random. ")
        warning += "Check the judge and its prompt before training on these labels."
    return LabellingSummary(
        mode=mode, n_comparisons=sum(counts.values()), counts=counts, usable=counts["verdict"],
        genuine_ties=counts["tie"], order_disagreements=disagreements, disagreements_become=DISAGREEMENTS_BECOME[mode],
        refused=counts["refused"], unparseable=counts["unparseable"], call_failed=counts["call_failed"],
        not_judged=counts["not_judged"], answered=answered, contradictory_share=share,
        contradictory_interval=interval, warning=warning)


__all__ = [
    "DISAGREEMENTS",
    "DISAGREEMENTS_BECOME",
    "LabellingSummary",
    "NO_LABEL",
    "OUTCOMES",
    "OUTCOME_TEXT",
    "Outcome",
    "line_outcome",
    "order_failure",
    "pair_outcome",
    "ranking_outcome",
    "summarize_outcomes",
    "wilson_interval",
]
