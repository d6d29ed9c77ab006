"""STARC distances, per-prompt rank correlation, label agreement and the drill-down, against hand
computation and scipy."""

import math

import numpy as np
import pytest
from scipy import stats
from scipy.stats import binomtest

from rlcore.analysis.inputs import LabelledPair, ScoreTable, align_sources
from rlcore.analysis.starc import compare_sources, drill_down, starc_distance_matrix
from rlcore.errors import UserError


def table(name, rows):
    return ScoreTable.from_rows(name, rows)


def test_it_computes_the_distance_of_a_hand_worked_example():
    # prompt p has 2 responses (weight 1/4 each under D), prompt q has 3 (weight 1/6 each)
    a = table("a", [("p", "y1", 2), ("p", "y2", 0), ("q", "y1", 1), ("q", "y2", 1), ("q", "y3", 4)])
    b = table("b", [("p", "y1", 0), ("p", "y2", 1), ("q", "y1", 0), ("q", "y2", 3), ("q", "y3", 3)])
    # by hand: c_a = [1, -1 | -1, -1, 2], c_b = [-.5, .5 | -2, 1, 1]
    # ||c_a||^2 = (1 + 1)/4 + (1 + 1 + 4)/6 = 1.5; ||c_b||^2 = (.25 + .25)/4 + (4 + 1 + 1)/6 = 1.125
    # <c_a, c_b> = (-.5 - .5)/4 + (2 - 1 + 2)/6 = 0.25; d^2 = 2 - 2 * 0.25 / sqrt(1.5 * 1.125)
    expected = math.sqrt(2 - 2 * 0.25 / math.sqrt(1.5 * 1.125))
    m = starc_distance_matrix([a, b])
    assert m.distances[0][1] == pytest.approx(expected, abs=1e-12)
    assert m.distances[1][0] == pytest.approx(expected, abs=1e-12)
    assert m.distances[0][0] == 0.0
    assert (m.n_responses, m.n_prompts, m.n_prompts_single_response) == (5, 2, 0)
    assert "single-turn" in m.method


def test_it_gives_zero_for_rewards_that_differ_by_a_per_prompt_shift_and_a_positive_scale():
    rng = np.random.default_rng(0)
    rows = [(f"p{p}", f"y{y}", float(rng.normal())) for p in range(30) for y in range(rng.integers(2, 7))]
    shift = {f"p{p}": float(rng.normal(scale=10)) for p in range(30)}
    a = table("a", rows)
    b = table("b", [(p, y, 3.7 * s + shift[p]) for p, y, s in rows])
    opposite = table("opposite", [(p, y, -0.2 * s + shift[p]) for p, y, s in rows])
    unrelated = table("unrelated", [(p, y, float(rng.normal())) for p, y, _ in rows])
    d = np.array(starc_distance_matrix([a, b, opposite, unrelated]).distances)
    assert d[0, 1] == pytest.approx(0.0, abs=1e-9)
    assert d[0, 2] == pytest.approx(2.0, abs=1e-9)
    assert 1.0 < d[0, 3] < 1.7  # unrelated rewards sit near sqrt(2)


def test_it_is_not_invariant_to_scaling_one_prompt_alone():
    a = table("a", [("p", "y1", 1), ("p", "y2", 0), ("q", "y1", 0), ("q", "y2", 1)])
    b = table("b", [("p", "y1", 10), ("p", "y2", 0), ("q", "y1", 0), ("q", "y2", 1)])
    # c_a = [.5, -.5, -.5, .5], c_b = [5, -5, -.5, .5]; weights 1/4 each
    # <c_a, c_b> = (2.5 + 2.5 + .25 + .25)/4 = 1.375; ||c_a||^2 = 1/4; ||c_b||^2 = (25 + 25 + .25 + .25)/4
    cos = 1.375 / math.sqrt(0.25 * 12.625)
    assert starc_distance_matrix([a, b]).distances[0][1] == pytest.approx(math.sqrt(2 - 2 * cos), abs=1e-12)


def test_it_names_a_constant_source_and_puts_it_at_distance_one():
    a = table("a", [("p", "y1", 1), ("p", "y2", 0)])
    flat = table("flat", [("p", "y1", 5), ("p", "y2", 5)])
    m = starc_distance_matrix([a, flat])
    assert m.constant_sources == ["flat"]
    assert m.distances[0][1] == pytest.approx(1.0)


def test_it_refuses_sources_scored_on_different_response_sets_naming_the_source_and_response():
    a = table("rm-v1", [("p", "y1", 1), ("p", "y2", 0), ("q", "y1", 1)])
    b = table("rm-v2", [("p", "y1", 1), ("p", "y2", 0)])
    with pytest.raises(UserError, match=r"source 'rm-v2' has no score for 1 of the 3 responses .*prompt 'q', response 'y1'"):
        starc_distance_matrix([a, b])
    with pytest.raises(UserError, match="given twice"):
        align_sources([a, a])


def test_its_rank_correlations_are_scipys_averaged_over_the_prompts_where_they_are_defined():
    rng = np.random.default_rng(1)
    rows_a, rows_b = [], []
    for p in range(25):
        n = int(rng.integers(2, 9))
        for y in range(n):
            rows_a.append((f"p{p:02d}", f"y{y}", float(rng.integers(0, 4))))  # small integers: ties
            rows_b.append((f"p{p:02d}", f"y{y}", float(rng.integers(0, 4))))
    rows_a += [("z-const", "y0", 1.0), ("z-const", "y1", 1.0), ("z-single", "y0", 3.0)]
    rows_b += [("z-const", "y0", 0.0), ("z-const", "y1", 2.0), ("z-single", "y0", 1.0)]
    result = compare_sources([table("a", rows_a), table("b", rows_b)]).rank_correlations[0]
    by_prompt_a, by_prompt_b = {}, {}
    for (p, _, s), (_, _, t) in zip(rows_a, rows_b):
        by_prompt_a.setdefault(p, []).append(s)
        by_prompt_b.setdefault(p, []).append(t)
    rhos, taus = [], []
    for p in by_prompt_a:
        x, y = by_prompt_a[p], by_prompt_b[p]
        if len(x) < 2 or len(set(x)) < 2 or len(set(y)) < 2:
            continue
        rhos.append(stats.spearmanr(x, y).statistic)
        taus.append(stats.kendalltau(x, y).statistic)
    assert result.n_prompts == len(rhos)
    assert result.n_prompts_single_response == 1
    assert result.n_prompts_undefined == 27 - 1 - len(rhos)
    assert result.n_prompts_undefined >= 1  # z-const at least
    assert result.spearman_mean == pytest.approx(np.mean(rhos), abs=1e-12)
    assert result.kendall_tau_b_mean == pytest.approx(np.mean(taus), abs=1e-12)
    half = stats.t.ppf(0.975, len(rhos) - 1) * np.std(rhos, ddof=1) / math.sqrt(len(rhos))
    assert result.spearman_ci_low == pytest.approx(max(-1, np.mean(rhos) - half), abs=1e-12)


def test_its_label_agreement_counts_hand_checked_pairs_with_a_wilson_interval():
    a = table("a", [("p", "y1", 3), ("p", "y2", 1), ("p", "y3", 1), ("q", "y1", 0), ("q", "y2", 2)])
    b = table("b", [("p", "y1", 0), ("p", "y2", 1), ("p", "y3", 1), ("q", "y1", 5), ("q", "y2", 2)])
    pairs = [LabelledPair(prompt_id="p", chosen_id="y1", rejected_id="y2"),   # a right, b wrong
             LabelledPair(prompt_id="p", chosen_id="y2", rejected_id="y3"),   # both level: half
             LabelledPair(prompt_id="q", chosen_id="y2", rejected_id="y1"),   # a right, b wrong
             LabelledPair(prompt_id="q", chosen_id="y1", rejected_id="y2", tie=True),
             LabelledPair(prompt_id="q", chosen_id="y9", rejected_id="y2")]
    agreement = {x.source: x for x in compare_sources([a, b], pairs).label_agreement}
    assert (agreement["a"].accuracy, agreement["a"].n_pairs) == (2.5 / 3, 3)
    assert agreement["b"].accuracy == pytest.approx(0.5 / 3)
    assert (agreement["a"].n_ties_excluded, agreement["a"].n_pairs_unscored) == (1, 1)
    reference = binomtest(1, 3).proportion_ci(method="wilson")  # whole-number check of the interval
    from rlcore.training.calibration import wilson_interval
    assert wilson_interval(1, 3) == pytest.approx((reference.low, reference.high), abs=1e-9)


def test_its_drill_down_finds_the_pair_the_sources_order_oppositely():
    rng = np.random.default_rng(2)
    rows = [(f"p{p}", f"y{y}", float(y + rng.normal(scale=0.01))) for p in range(20) for y in range(5)]
    swapped = {("p7", "y0"): rows[35 + 4][2], ("p7", "y4"): rows[35][2]}  # swap p7's best and worst
    a = table("a", rows)
    b = table("b", [(p, y, swapped.get((p, y), s)) for p, y, s in rows])
    d = drill_down([a, b], "a", "b", top=3)
    top = d.pairs[0]
    assert (top.prompt_id, top.response_1, top.response_2) == ("p7", "y0", "y4")
    assert top.standardised_difference_a < 0 < top.standardised_difference_b
    assert d.n_pairs_considered == 20 * 10
    assert d.n_discordant == 7  # y0-y4 and every pair with one of them in between: 1 + 3 + 3
    with pytest.raises(UserError, match="source 'c' is not among"):
        drill_down([a, b], "a", "c")
