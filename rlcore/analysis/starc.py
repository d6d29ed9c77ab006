r"""Comparing reward functions on one response set: STARC distance, rank correlation, agreement.

**STARC** (Skalse et al., "STARC: A General Framework For Quantifying Differences Between Reward
Functions", ICLR 2024) is ``d(R1, R2) = m(s(R1), s(R2))`` with ``s(R) = c(R) / n(c(R))`` (``s(R) = 0``
when ``c(R) = 0``): ``c`` a canonicalisation that removes what does not change the policy order
(potential shaping, and in the MDP case S'-redistribution), ``n`` a norm and ``m`` a metric. We use the
**single-turn (contextual-bandit) reduction**: a prompt ``x`` is the state, a response ``y`` the one
action, and the episode ends. Potential shaping ``R + gamma Phi(s') - Phi(s)`` with a terminal ``s'``
(``Phi = 0`` there) is then exactly a per-prompt shift ``-Phi(x)``, so the canonicalisation subtracts
the per-prompt mean over the scored responses:

    c(R)(x, y) = R(x, y) - mean_{y' in Y(x)} R(x, y')

The norm is the L2 norm under the distribution D that picks a prompt uniformly, then one of its
scored responses uniformly, and the metric is that norm of the difference:

    ||f||^2 = (1/P) sum_x (1/|Y(x)|) sum_{y in Y(x)} f(x, y)^2,     d = || s(R1) - s(R2) ||

so ``d`` lies in [0, 2]: 0 when the rewards differ only by a per-prompt shift and one positive scale,
sqrt(2) for unrelated rewards, 2 for opposite ones. (The scale is global, as in STARC: scaling one
prompt's rewards alone changes how prompts trade off, and so changes the distance.) A prompt with one
scored response has ``c = 0`` there and adds nothing; it is counted in ``n_prompts_single_response``.

>>> from rlcore.analysis.inputs import ScoreTable
>>> a = ScoreTable.from_rows("a", [("p", "y1", 1.0), ("p", "y2", 0.0), ("q", "y1", 5.0), ("q", "y2", 3.0)])
>>> b = ScoreTable.from_rows("b", [("p", "y1", 12.0), ("p", "y2", 10.0), ("q", "y1", -1.0), ("q", "y2", -5.0)])
>>> m = starc_distance_matrix([a, b])
>>> m.distances[0][1]
0.0
>>> flipped = ScoreTable.from_rows("c", [(p, y, -s) for (p, y), s in a.scores.items()])
>>> round(starc_distance_matrix([a, flipped]).distances[0][1], 6)
2.0

**Rank correlation per prompt**: Spearman's rho and Kendall's tau-b of the two sources' scores over a
prompt's responses (as ``scipy.stats.spearmanr`` / ``kendalltau`` define them), averaged over the
prompts where both are defined (each source gives two or more distinct scores there), with the
prompt counts and a t interval on the mean over prompts.

**Agreement with labels**: on each decisive labelled pair, a source agrees when it scores the chosen
response higher (equal scores count half, as in ``rlcore.training.calibration``); the share, its pair
count and a 95% Wilson interval. Ties are left out and counted.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from pydantic import BaseModel, Field
from scipy import stats

from rlcore.analysis.inputs import AlignedScores, LabelledPair, ScoreTable, align_sources
from rlcore.errors import UserError
from rlcore.training.calibration import wilson_interval

STARC_METHOD = ("STARC, single-turn reduction: c(R)(x,y) = R(x,y) - mean over the prompt's responses; "
                "s = c / ||c||; d = ||s1 - s2||; ||.|| = L2 under uniform prompt, then uniform response; d in [0, 2]")
# Kendall's tau by sign matrices needs K * n^2 floats per prompt; past this many responses use scipy's O(n log n)
_SIGN_MATRIX_MAX_RESPONSES = 2000


class StarcDistances(BaseModel):
    """The STARC distance matrix and what it rests on."""

    method: str = Field(STARC_METHOD, description="the exact formula used")
    sources: list[str]
    distances: list[list[float]] = Field(description="distances[i][j] between sources[i] and sources[j], in [0, 2]")
    n_responses: int = Field(description="responses every source scored")
    n_prompts: int
    n_prompts_single_response: int = Field(description="prompts with one scored response: they add nothing")
    constant_sources: list[str] = Field(
        description="sources whose canonicalised reward is 0 (constant within every prompt): s = 0, so their "
                    "distance to any other source is 1")


class RankCorrelation(BaseModel):
    """Per-prompt rank correlation of two sources, averaged over the prompts where it is defined."""

    source_a: str
    source_b: str
    spearman_mean: float | None
    spearman_ci_low: float | None = Field(description="95% t interval on the mean over prompts (None below 2 prompts)")
    spearman_ci_high: float | None
    kendall_tau_b_mean: float | None
    kendall_ci_low: float | None
    kendall_ci_high: float | None
    n_prompts: int = Field(description="prompts the means rest on")
    n_prompts_undefined: int = Field(description="prompts left out: a source gave all their responses one score")
    n_prompts_single_response: int = Field(description="prompts left out: one scored response")


class LabelAgreement(BaseModel):
    """How often a source orders labelled pairs as the labels do."""

    source: str
    accuracy: float | None
    ci_low: float | None = Field(description="95% Wilson interval")
    ci_high: float | None
    n_pairs: int = Field(description="decisive labelled pairs it rests on")
    n_ties_excluded: int
    n_pairs_unscored: int = Field(description="labelled pairs naming a response outside the shared response set")


class RewardComparison(BaseModel):
    """Everything the comparison page shows: the STARC matrix, rank correlations, label agreement."""

    starc: StarcDistances
    rank_correlations: list[RankCorrelation]
    label_agreement: list[LabelAgreement] | None = Field(None, description="None when no labelled pairs were given")


class DisagreementPair(BaseModel):
    prompt_id: str
    response_1: str
    response_2: str
    score_a: tuple[float, float] = Field(description="source a's raw scores of response_1, response_2")
    score_b: tuple[float, float]
    standardised_difference_a: float = Field(description="s_a(response_1) - s_a(response_2)")
    standardised_difference_b: float
    disagreement: float = Field(description="|difference_a - difference_b| (standardised: scale-free)")


class DrillDown(BaseModel):
    """The response pairs (same prompt) that two sources order most differently."""

    source_a: str
    source_b: str
    n_pairs_considered: int = Field(description="response pairs within a prompt")
    n_discordant: int = Field(description="pairs the two sources order oppositely")
    pairs: list[DisagreementPair] = Field(description="the most different discordant pairs, largest first")


def _standardise(aligned: AlignedScores) -> tuple[np.ndarray, np.ndarray, int, list[str]]:
    """``s(R)`` for every source, the weight of each response under D, single-response prompts, constant sources."""
    counts = np.diff(aligned.prompt_starts)
    n_prompts = len(aligned.prompts)
    per_response_count = counts[aligned.prompt_index]
    weights = 1.0 / (n_prompts * per_response_count)
    canonical = np.empty_like(aligned.values)
    for k in range(aligned.values.shape[0]):
        means = np.bincount(aligned.prompt_index, weights=aligned.values[k], minlength=n_prompts) / counts
        canonical[k] = aligned.values[k] - means[aligned.prompt_index]
    norms = np.sqrt(canonical ** 2 @ weights)
    # scores are doubles; a canonicalised reward this close to 0 is rounding of a constant one
    scale = np.abs(aligned.values).max(axis=1) if aligned.values.size else np.zeros(len(norms))
    constant = norms <= 1e-12 * np.maximum(scale, 1.0)
    standardised = np.where(constant[:, None], 0.0, canonical / np.where(constant, 1.0, norms)[:, None])
    constant_sources = [aligned.sources[k] for k in np.flatnonzero(constant)]
    return standardised, weights, int((counts == 1).sum()), constant_sources


def _starc(aligned: AlignedScores) -> StarcDistances:
    standardised, weights, single, constant = _standardise(aligned)
    gram = (standardised * weights) @ standardised.T
    squared = np.diag(gram)[:, None] + np.diag(gram)[None, :] - 2.0 * gram
    distances = np.sqrt(np.clip(squared, 0.0, None))
    distances = np.round(distances, 12)  # 1e-16 of rounding is not a difference between rewards
    np.fill_diagonal(distances, 0.0)
    return StarcDistances(sources=aligned.sources, distances=distances.tolist(), n_responses=len(aligned.keys),
                          n_prompts=len(aligned.prompts), n_prompts_single_response=single,
                          constant_sources=constant)


def starc_distance_matrix(tables: Sequence[ScoreTable]) -> StarcDistances:
    """STARC distances between K sources scored on one response set (see the module docstring)."""
    return _starc(align_sources(tables))


def _mean_with_interval(values: list[float]) -> tuple[float | None, float | None, float | None]:
    if not values:
        return None, None, None
    arr = np.asarray(values)
    mean = float(arr.mean())
    if len(arr) < 2:
        return mean, None, None
    half = float(stats.t.ppf(0.975, len(arr) - 1) * arr.std(ddof=1) / math.sqrt(len(arr)))
    return mean, max(-1.0, mean - half), min(1.0, mean + half)


def _kendall_tau_b(block: np.ndarray) -> np.ndarray:
    """tau-b for every pair of rows: sum sgn_a sgn_b / sqrt(sum sgn_a^2 * sum sgn_b^2) over response pairs."""
    k, n = block.shape
    if n > _SIGN_MATRIX_MAX_RESPONSES:
        tau = np.full((k, k), np.nan)
        for a in range(k):
            for b in range(k):
                tau[a, b] = stats.kendalltau(block[a], block[b]).statistic
        return tau
    signs = np.sign(block[:, :, None] - block[:, None, :]).reshape(k, n * n)
    numerator = signs @ signs.T
    untied = np.diag(numerator)
    with np.errstate(divide="ignore", invalid="ignore"):
        return numerator / np.sqrt(np.outer(untied, untied))


def _rank_correlations(aligned: AlignedScores) -> list[RankCorrelation]:
    k = len(aligned.sources)
    spearman: dict[tuple[int, int], list[float]] = {(a, b): [] for a in range(k) for b in range(a + 1, k)}
    kendall: dict[tuple[int, int], list[float]] = {key: [] for key in spearman}
    single = 0
    starts = aligned.prompt_starts
    for p in range(len(aligned.prompts)):
        block = aligned.values[:, starts[p]:starts[p + 1]]
        if block.shape[1] < 2:
            single += 1
            continue
        ranks = stats.rankdata(block, axis=1)
        centred = ranks - ranks.mean(axis=1, keepdims=True)
        spread = np.sqrt((centred ** 2).sum(axis=1))
        with np.errstate(divide="ignore", invalid="ignore"):
            rho = (centred @ centred.T) / np.outer(spread, spread)
        tau = _kendall_tau_b(block)
        for (a, b) in spearman:
            if spread[a] > 0 and spread[b] > 0:
                spearman[(a, b)].append(float(np.clip(rho[a, b], -1.0, 1.0)))
                kendall[(a, b)].append(float(np.clip(tau[a, b], -1.0, 1.0)))
    n_multi = len(aligned.prompts) - single
    out = []
    for (a, b), rhos in spearman.items():
        s_mean, s_low, s_high = _mean_with_interval(rhos)
        t_mean, t_low, t_high = _mean_with_interval(kendall[(a, b)])
        out.append(RankCorrelation(
            source_a=aligned.sources[a], source_b=aligned.sources[b], spearman_mean=s_mean, spearman_ci_low=s_low,
            spearman_ci_high=s_high, kendall_tau_b_mean=t_mean, kendall_ci_low=t_low, kendall_ci_high=t_high,
            n_prompts=len(rhos), n_prompts_undefined=n_multi - len(rhos), n_prompts_single_response=single))
    return out


def _label_agreement(aligned: AlignedScores, pairs: Sequence[LabelledPair]) -> list[LabelAgreement]:
    position = {key: i for i, key in enumerate(aligned.keys)}
    chosen, rejected = [], []
    ties = unscored = 0
    for pair in pairs:
        if pair.tie:
            ties += 1
            continue
        i = position.get((pair.prompt_id, pair.chosen_id))
        j = position.get((pair.prompt_id, pair.rejected_id))
        if i is None or j is None:
            unscored += 1
            continue
        chosen.append(i)
        rejected.append(j)
    out = []
    for k, source in enumerate(aligned.sources):
        margins = aligned.values[k, chosen] - aligned.values[k, rejected]
        n = len(margins)
        correct = float((margins > 0).sum() + 0.5 * (margins == 0).sum())
        low, high = wilson_interval(correct, n) if n else (None, None)
        out.append(LabelAgreement(source=source, accuracy=correct / n if n else None, ci_low=low, ci_high=high,
                                  n_pairs=n, n_ties_excluded=ties, n_pairs_unscored=unscored))
    return out


def compare_sources(tables: Sequence[ScoreTable], pairs: Sequence[LabelledPair] | None = None) -> RewardComparison:
    """STARC matrix, per-prompt rank correlations and (with labelled pairs) each source's agreement with them."""
    aligned = align_sources(tables)
    return RewardComparison(starc=_starc(aligned), rank_correlations=_rank_correlations(aligned),
                            label_agreement=_label_agreement(aligned, pairs) if pairs is not None else None)


def drill_down(tables: Sequence[ScoreTable], source_a: str, source_b: str, top: int = 20) -> DrillDown:
    """The ``top`` response pairs (same prompt) that two sources order oppositely, most different first.

    Differences are taken on the standardised rewards ``s(R)``, so a pair ranks high when the sources
    disagree by a large share of their own spread, whatever their scales.

    >>> from rlcore.analysis.inputs import ScoreTable
    >>> a = ScoreTable.from_rows("a", [("p", "y1", 3.0), ("p", "y2", 2.0), ("p", "y3", 1.0)])
    >>> b = ScoreTable.from_rows("b", [("p", "y1", 1.0), ("p", "y2", 2.0), ("p", "y3", 3.0)])
    >>> d = drill_down([a, b], "a", "b", top=1)
    >>> d.n_pairs_considered, d.n_discordant, (d.pairs[0].response_1, d.pairs[0].response_2)
    (3, 3, ('y1', 'y3'))
    """
    aligned = align_sources(tables)
    for name in (source_a, source_b):
        if name not in aligned.sources:
            raise UserError(f"source {name!r} is not among the sources given ({', '.join(aligned.sources)})")
    if top < 1:
        raise UserError(f"top: expected a positive number of pairs, got {top}")
    standardised, _, _, _ = _standardise(aligned)
    ia, ib = aligned.sources.index(source_a), aligned.sources.index(source_b)
    sa, sb = standardised[ia], standardised[ib]
    best: list[tuple[float, int, int]] = []
    considered = discordant = 0
    starts = aligned.prompt_starts
    for p in range(len(aligned.prompts)):
        lo, hi = int(starts[p]), int(starts[p + 1])
        if hi - lo < 2:
            continue
        for row in range(lo, hi - 1):  # one row of the upper triangle at a time: memory stays O(n)
            cols = np.arange(row + 1, hi)
            da, db = sa[row] - sa[cols], sb[row] - sb[cols]
            considered += len(cols)
            mask = da * db < 0
            discordant += int(mask.sum())
            if mask.any():
                gap = np.abs(da - db)[mask]
                keep = cols[mask]
                if len(gap) > top:
                    idx = np.argpartition(-gap, top - 1)[:top]
                    gap, keep = gap[idx], keep[idx]
                best.extend((float(g), row, int(c)) for g, c in zip(gap, keep))
            if len(best) > 4 * top:
                best = sorted(best, reverse=True)[:top]
    best = sorted(best, key=lambda t: (-t[0], t[1], t[2]))[:top]
    raw = aligned.values
    out = [DisagreementPair(
        prompt_id=aligned.keys[i][0], response_1=aligned.keys[i][1], response_2=aligned.keys[j][1],
        score_a=(float(raw[ia, i]), float(raw[ia, j])), score_b=(float(raw[ib, i]), float(raw[ib, j])),
        standardised_difference_a=float(sa[i] - sa[j]), standardised_difference_b=float(sb[i] - sb[j]),
        disagreement=gap) for gap, i, j in best]
    return DrillDown(source_a=source_a, source_b=source_b, n_pairs_considered=considered, n_discordant=discordant,
                     pairs=out)
