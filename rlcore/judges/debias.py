"""Judging through any backend with position bias measured and removed: both orders, mapped back, combined.

**Pairwise** (:func:`compare_both_orders`): every pair is judged twice in one batch, as given (A/B) and
swapped (B/A). The swapped verdict is mapped back (A<->B; tie stays). The combined label follows one rule:

1. Either order has no verdict -> no combined verdict (``verdict=None``, ``error`` names the order and
   why). A single order is never promoted to a label.
2. The orders agree -> that verdict; strength is the smaller of the two (the one given when only one is);
   ``position_bias=False``.
3. The orders disagree -> ``verdict="tie"`` (no strength), ``position_bias=True``: the judge's
   preference followed the position, not the content (the rule of MT-Bench, Zheng et al. 2023).

Confidence: when both orders carry log-probabilities of the verdict token (``label_probabilities``),
the two distributions over A/B/tie are averaged (after mapping the swapped one back) and the confidence
is the averaged probability of the combined verdict (``confidence_source="logprobs"``); the averaged
distribution is kept in ``label_probabilities``. Otherwise the confidence is verdict agreement: the
share of the two orders that gave the combined verdict: 1.0 when they agree, 0.5 when a disagreement
became a tie because one order said tie, 0.0 when they picked opposite responses
(``confidence_source="agreement"``).

**Ranking** (:func:`rank_both_orders`): the responses are ranked as given and reversed; each response's
positions are averaged (Borda), ties broken by the order as given; ``position_bias`` when the two
orderings differ; confidence is the Kendall agreement of the two orderings mapped to [0, 1].

**Rubric grading** (:func:`grade_rubric`): every response x every criterion in one batch, results grouped
per response, criterion by criterion.

"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, computed_field

from rlcore.judges.base import GradeRequest, GradeResult, Judge, PairRequest, PairVerdict, PairWinner, RankingResult, \
    RankRequest
from rlcore.judges.outcomes import Outcome, pair_outcome, ranking_outcome

SWAP: dict[str, str] = {"A": "B", "B": "A", "tie": "tie"}


class DebiasedPairVerdict(BaseModel):
    """A pairwise label made from both presentation orders."""

    model_config = ConfigDict(frozen=True)

    request_id: str | None = Field(description="the request's id, unchanged")
    judge: str = Field(description="the judge that gave both verdicts")
    verdict: PairWinner | None = Field(description="combined verdict in the request's own labelling; None: no label")
    strength: int | None = Field(None, ge=1, le=3, description="combined strength (the smaller); None for a tie")
    confidence: float | None = Field(None, ge=0, le=1, description="confidence in the combined verdict")
    confidence_source: Literal["logprobs", "agreement"] | None = Field(
        None, description="'logprobs': averaged verdict-token probabilities; 'agreement': share of orders agreeing"
    )
    label_probabilities: dict[str, float] | None = Field(
        None, description="A/B/tie probabilities averaged over both orders (request's labelling), when known"
    )
    position_bias: bool | None = Field(None, description="the two orders disagreed; None when an order failed")
    forward_verdict: PairWinner | None = Field(description="verdict with the responses as given (A first)")
    swapped_verdict: PairWinner | None = Field(
        description="verdict with the responses swapped, mapped back to the request's labelling"
    )
    forward: PairVerdict = Field(description="the full result of the as-given order (rendered prompt, raw reply)")
    swapped: PairVerdict = Field(description="the full result of the swapped order, in its own labelling")
    error: str | None = Field(None, description="why there is no combined verdict")

    @property
    def ok(self) -> bool:
        return self.error is None and self.verdict is not None

    @computed_field(description="what the label is worth (rlcore.judges.outcomes): verdict, tie, disagree_*, "
                                "refused, call_failed, unparseable")
    @property
    def outcome(self) -> Outcome:
        return pair_outcome(forward_verdict=self.forward_verdict, swapped_verdict=self.swapped_verdict,
                            order_errors=[self.forward.error, self.swapped.error])


def swap_pair(request: PairRequest) -> PairRequest:
    """The same pair with the responses exchanged.

    >>> swap_pair(PairRequest(prompt="p", response_a="x", response_b="y")).response_a
    'y'
    """
    return request.model_copy(update={"response_a": request.response_b, "response_b": request.response_a})


def combine_orders(request_id: str | None, forward: PairVerdict, swapped: PairVerdict) -> DebiasedPairVerdict:
    """Apply the rule of this module to the verdicts of the two orders (``swapped`` in its own labelling).

    >>> def v(verdict, strength=None):
    ...     return PairVerdict(request_id=None, judge="j", rendered_prompt="", raw_reply="", verdict=verdict,
    ...                        strength=strength)
    >>> both = combine_orders("r1", v("A", 3), v("B", 2))
    >>> both.verdict, both.strength, both.position_bias, both.confidence, both.confidence_source
    ('A', 2, False, 1.0, 'agreement')
    >>> biased = combine_orders("r2", v("A", 2), v("A", 2))
    >>> biased.verdict, biased.swapped_verdict, biased.position_bias, biased.confidence, biased.outcome
    ('tie', 'B', True, 0.0, 'disagree_first')
    """
    mapped = SWAP[swapped.verdict] if swapped.verdict is not None else None
    common = dict(request_id=request_id, judge=forward.judge, forward=forward, swapped=swapped,
                  forward_verdict=forward.verdict, swapped_verdict=mapped)
    problems = [f"{name}: {result.error or 'no verdict'}" for name, result in
                (("order A/B", forward), ("order B/A", swapped)) if result.verdict is None]
    if problems:
        return DebiasedPairVerdict(verdict=None, error="; ".join(problems), **common)
    agree = forward.verdict == mapped
    verdict = forward.verdict if agree else "tie"
    strengths = [s for s in (forward.strength, swapped.strength) if s is not None]
    strength = min(strengths) if agree and verdict != "tie" and strengths else None
    forward_p = getattr(forward, "label_probabilities", None)
    swapped_p = getattr(swapped, "label_probabilities", None)
    if forward_p and swapped_p:
        mean = {label: (forward_p.get(label, 0.0) + swapped_p.get(SWAP[label], 0.0)) / 2 for label in SWAP}
        confidence, source, probabilities = mean[verdict], "logprobs", mean
    else:
        votes = [forward.verdict, mapped]
        confidence, source, probabilities = votes.count(verdict) / 2, "agreement", None
    return DebiasedPairVerdict(verdict=verdict, strength=strength, confidence=min(1.0, max(0.0, confidence)),
                               confidence_source=source, label_probabilities=probabilities,
                               position_bias=not agree, **common)


def compare_both_orders(judge: Judge, requests: Sequence[PairRequest]) -> list[DebiasedPairVerdict]:
    """Judge every pair in both orders (one batch of 2n calls) and combine; one result per request, in order."""
    requests = list(requests)
    results = judge.compare(requests + [swap_pair(r) for r in requests])
    n = len(requests)
    return [combine_orders(r.request_id, results[i], results[n + i]) for i, r in enumerate(requests)]


# ---------------------------------------------------------------- ranking


class DebiasedRanking(BaseModel):
    """An N-way ranking made from the responses as given and reversed."""

    model_config = ConfigDict(frozen=True)

    request_id: str | None = Field(description="the request's id, unchanged")
    judge: str = Field(description="the judge that gave both rankings")
    verdict: list[int] | None = Field(description="0-based indices of the request's responses, best first")
    confidence: float | None = Field(None, ge=0, le=1, description="agreement of the two orderings, (tau + 1) / 2")
    position_bias: bool | None = Field(None, description="the two orderings differ; None when one failed")
    forward_verdict: list[int] | None = Field(None, description="the ranking of the responses as given")
    reversed_verdict: list[int] | None = Field(
        None, description="the ranking of the reversed list, mapped back to the request's indices"
    )
    forward: RankingResult = Field(description="the ranking of the responses as given")
    reversed: RankingResult = Field(description="the ranking of the responses in reverse order, in its own indices")
    error: str | None = Field(None, description="why there is no combined ranking")

    @property
    def ok(self) -> bool:
        return self.error is None and self.verdict is not None

    @computed_field(description="what the label is worth (rlcore.judges.outcomes): verdict, disagree, refused, "
                                "call_failed, unparseable")
    @property
    def outcome(self) -> Outcome:
        return ranking_outcome(forward_verdict=self.forward_verdict, reversed_verdict=self.reversed_verdict,
                               order_errors=[self.forward.error, self.reversed.error])


def combine_rankings(request_id: str | None, forward: RankingResult, backward: RankingResult) -> DebiasedRanking:
    """Average each response's position over both orders (``backward`` ranks the reversed list).

    >>> def r(order):
    ...     return RankingResult(request_id=None, judge="j", rendered_prompt="", raw_reply="", verdict=order)
    >>> same = combine_rankings(None, r([2, 0, 1]), r([0, 2, 1]))  # reversed list: index 0 is response 2
    >>> same.verdict, same.position_bias, same.confidence
    ([2, 0, 1], False, 1.0)
    >>> first_wins = combine_rankings(None, r([0, 1, 2]), r([0, 1, 2]))  # always picks whatever is shown first
    >>> first_wins.verdict, first_wins.position_bias, first_wins.confidence
    ([0, 1, 2], True, 0.0)
    """
    n = len(forward.verdict or backward.verdict or [])
    # reversed list index k is response n-1-k
    mapped = [n - 1 - i for i in backward.verdict] if backward.verdict is not None else None
    common = dict(request_id=request_id, judge=forward.judge, forward=forward, reversed=backward,
                  forward_verdict=forward.verdict, reversed_verdict=mapped)
    problems = [f"{name}: {result.error or 'no verdict'}" for name, result in
                (("order as given", forward), ("order reversed", backward)) if result.verdict is None]
    if problems:
        return DebiasedRanking(verdict=None, error="; ".join(problems), **common)
    position = {i: 0.0 for i in range(n)}
    for order in (forward.verdict, mapped):
        for place, index in enumerate(order):
            position[index] += place / 2
    forward_place = {index: place for place, index in enumerate(forward.verdict)}
    combined = sorted(range(n), key=lambda i: (position[i], forward_place[i]))
    return DebiasedRanking(verdict=combined, confidence=(_kendall_tau(forward.verdict, mapped) + 1) / 2,
                           position_bias=forward.verdict != mapped, **common)


def _kendall_tau(first: list[int], second: list[int]) -> float:
    """Kendall's tau between two orderings of the same items (1 identical, -1 reversed)."""
    n = len(first)
    if n < 2:
        return 1.0
    rank = {item: place for place, item in enumerate(second)}
    concordant = sum(1 if rank[first[i]] < rank[first[j]] else -1 for i in range(n) for j in range(i + 1, n))
    return concordant / (n * (n - 1) / 2)


def rank_both_orders(judge: Judge, requests: Sequence[RankRequest]) -> list[DebiasedRanking]:
    """Rank every request as given and reversed (one batch of 2n calls) and combine; one result each, in order."""
    requests = list(requests)
    backward = [r.model_copy(update={"responses": list(reversed(r.responses))}) for r in requests]
    results = judge.rank(requests + backward)
    n = len(requests)
    return [combine_rankings(r.request_id, results[i], results[n + i]) for i, r in enumerate(requests)]


# ---------------------------------------------------------------- rubric grading


class CriterionToGrade(BaseModel):
    """One rubric criterion as the judge sees it."""

    model_config = ConfigDict(frozen=True)

    name: str = Field(description="the criterion's name (results are keyed by it)")
    description: str = Field("", description="what the criterion asks for")
    scale_min: float = Field(0.0, description="lowest score")
    scale_max: float = Field(1.0, description="highest score")


class ResponseToGrade(BaseModel):
    """One response to grade against every criterion."""

    model_config = ConfigDict(frozen=True)

    request_id: str | None = Field(None, description="caller's id; each grade's id is '<request_id>/<criterion>'")
    prompt: str = Field(description="the prompt the response answers")
    response: str = Field(description="the response")
    reference: str | None = Field(None, description="a reference answer, if any")


def grade_rubric(judge: Judge, items: Sequence[ResponseToGrade],
                 criteria: Sequence[CriterionToGrade]) -> list[dict[str, GradeResult]]:
    """Grade every item on every criterion in one batch; per item, ``{criterion name: result}`` in rubric order.

    A criterion whose reply cannot be parsed has ``verdict=None`` and its own ``error``; the other criteria stand.
    """
    names = [c.name for c in criteria]
    if len(set(names)) != len(names):
        from rlcore.errors import UserError

        raise UserError(f"criteria: names must be unique, got {names}")
    requests = [GradeRequest(request_id=f"{item.request_id}/{c.name}" if item.request_id is not None else c.name,
                             prompt=item.prompt, response=item.response, criterion=c.name, description=c.description,
                             scale_min=c.scale_min, scale_max=c.scale_max, reference=item.reference)
                for item in items for c in criteria]
    results = judge.grade(requests)
    k = len(criteria)
    return [dict(zip(names, results[i * k:(i + 1) * k])) for i in range(len(items))]


__all__ = [
    "CriterionToGrade",
    "DebiasedPairVerdict",
    "DebiasedRanking",
    "ResponseToGrade",
    "combine_orders",
    "combine_rankings",
    "compare_both_orders",
    "grade_rubric",
    "rank_both_orders",
    "swap_pair",
]
