"""Routing gate: topk / optimal_pos are used only when held-out halves of the pilot show a gain over
random; otherwise the plan falls back to a stated baseline and says why. The R^2 and the interval are
checked against scikit-learn / scipy, not against rlcore."""

import numpy as np
import pytest
from scipy.stats import norm
from sklearn.linear_model import Ridge
from sklearn.metrics import r2_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from rlcore.routing.features import RoutingComparison, build_feature_table, extract_features
from rlcore.routing.predictor import (
    LabelledPool,
    RoutingGate,
    cross_fitted_gain,
    fit_routing_model,
    pilot_halves,
    plan_routing,
    plan_summary,
    transfer_r2,
)


def _pilot(n, seed, lm_wrong_on_math=True):
    """Comparisons in three categories. With ``lm_wrong_on_math`` the judge inverts every math label
    (a human label there is worth buying); without it the judge errs on 30 % chosen at random and
    humans on 20 %: no feature says where a human label helps, so no router can beat random."""
    rng = np.random.default_rng(seed)
    cats = np.array(["chat", "math", "code"])[rng.integers(0, 3, n)]
    comps = [
        RoutingComparison(comparison_id=f"c{i}", prompt=f"{cats[i]} question", response_a="a " * int(rng.integers(1, 30)),
                          response_b="b " * int(rng.integers(1, 30)), tags=[str(cats[i])],
                          judge_position_disagreement=bool(i % 7 == 0), judge_confidence=float(rng.random()))
        for i in range(n)
    ]
    table = build_feature_table(extract_features(comps))
    vectors = rng.normal(size=(n, 6))
    truth = (vectors @ np.array([1.0, -1.0, 0.5, 0.0, 2.0, -0.5]) > 0).astype(float)
    if lm_wrong_on_math:
        human, lm = truth, np.where(cats == "math", 1.0 - truth, truth)
    else:
        human = np.where(rng.random(n) < 0.2, 1.0 - truth, truth)
        lm = np.where(rng.random(n) < 0.3, 1.0 - truth, truth)
    pool = LabelledPool(comparison_ids=table.ids, human=human.tolist(), lm=lm.tolist())
    return table, vectors, pool


def _fit(table, vectors, pool, seed=0, sims=120):
    return fit_routing_model(table.matrix(), table.feature_names, pool, vectors, n_simulations=sims, seed=seed)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_it_falls_back_to_random_and_says_why_when_no_feature_predicts_a_gain(seed):
    table, vectors, pool = _pilot(240, seed, lm_wrong_on_math=False)
    plan = plan_routing(table, 0.25, "topk", model=_fit(table, vectors, pool, seed))
    assert (plan.requested_strategy, plan.strategy) == ("topk", "random")
    assert plan.n_human == 60 and all(not r.top_features for r in plan.reasons)
    ev = plan.evidence
    assert not ev.passed and ev.interval_low <= 0 < ev.interval_high
    assert "is not above zero" in plan.fallback_reason and "Routed by random instead, for the same 60" in plan.fallback_reason
    assert ev.n_pilot == 240 and ev.n_pilot_scored == 240 and len(ev.gain_by_half) == 6


def test_it_names_the_pilot_size_when_the_pilot_is_too_small_and_can_fall_back_to_uncertainty():
    table, vectors, pool = _pilot(40, 0)
    plan = plan_routing(table, 10, "topk", model=_fit(table, vectors, pool),
                        gate=RoutingGate(fallback="uncertainty"))
    assert plan.strategy == "uncertainty" and plan.n_human == 10
    assert "rests on 40 pilot comparisons" in plan.fallback_reason and "at least 100 are needed" in plan.fallback_reason
    assert "Held-out predicted gain of topk over random" in plan_summary(plan)


def test_it_keeps_topk_when_held_out_halves_show_the_gain_and_reports_the_interval():
    table, vectors, pool = _pilot(240, 1)
    plan = plan_routing(table, 0.25, "topk", model=_fit(table, vectors, pool, 1))
    ev = plan.evidence
    assert plan.strategy == "topk" and plan.fallback_reason is None and ev.passed
    assert 0 < ev.interval_low < ev.gain_over_random < ev.interval_high
    ungated = plan_routing(table, 0.25, "topk", model=_fit(table, vectors, pool, 1), gate=None)
    assert ungated.human_ids == plan.human_ids


def _sklearn_ridge(half, ridge):
    model = make_pipeline(StandardScaler(), Ridge(alpha=ridge))
    model.fit(np.asarray(half.simulations.shares), np.asarray(half.simulations.scores))
    return model


def test_its_r2_cross_validated_on_the_pilot_halves_matches_sklearn():
    table, vectors, pool = _pilot(240, 1)
    model = _fit(table, vectors, pool, 1)
    assert len(model.halves) == 6
    # the halves are disjoint and cover the pilot
    a, b = pilot_halves(240, 1)
    assert not set(a) & set(b) and len(a) + len(b) == 240 and model.halves[0].n_pool == 120
    ys, preds = [], []
    for i in range(0, 6, 2):
        for judge, other in ((model.halves[i], model.halves[i + 1]), (model.halves[i + 1], model.halves[i])):
            y = np.asarray(other.simulations.scores)
            p = _sklearn_ridge(judge, judge.ridge).predict(np.asarray(other.simulations.shares))
            ys.append(y)
            preds.append(p - p.mean() + y.mean())
    expected = r2_score(np.concatenate(ys), np.concatenate(preds))
    assert model.holdout_r2 == pytest.approx(expected, abs=1e-9)
    assert transfer_r2(model.halves) == pytest.approx(expected, abs=1e-9)


def test_its_gain_interval_is_the_documented_normal_interval_computed_with_sklearn_and_scipy():
    table, vectors, pool = _pilot(240, 1)
    model = _fit(table, vectors, pool, 1)
    judges = model.halves[:2]
    rng = np.random.default_rng(5)
    deltas = [rng.normal(0, 0.05, size=len(j.coef)) for j in judges]
    gain, low, high, each = cross_fitted_gain(judges, deltas, n_bootstrap=50, level=0.9, seed=3)
    # point estimates: sklearn's ridge coefficients (in share units) times the change of shares
    coefs = []
    for j in judges:
        fitted = _sklearn_ridge(j, j.ridge)
        coefs.append(fitted[-1].coef_ / fitted[0].scale_)
    assert each == pytest.approx([c @ d for c, d in zip(coefs, deltas)], abs=1e-9)
    assert gain == pytest.approx(np.mean(each), abs=1e-12)
    # interval: same resamples (one rng.integers draw per judge per resample, in order), sklearn refits
    rng = np.random.default_rng(3)
    draws = []
    for _ in range(50):
        total = 0.0
        for j, d in zip(judges, deltas):
            x, y = np.asarray(j.simulations.shares), np.asarray(j.simulations.scores)
            idx = rng.integers(0, len(y), len(y))
            fitted = make_pipeline(StandardScaler(), Ridge(alpha=j.ridge)).fit(x[idx], y[idx])
            total += (fitted[-1].coef_ / fitted[0].scale_) @ d
        draws.append(total / 2)
    half_width = norm.ppf(0.95) * np.sqrt(np.var(draws, ddof=1) + np.var(each, ddof=1) / 2)
    assert (low, high) == pytest.approx((gain - half_width, gain + half_width), abs=1e-9)


def test_it_falls_back_with_a_reason_for_a_quadratic_model_instead_of_failing():
    table, vectors, pool = _pilot(120, 2)
    model = fit_routing_model(table.matrix(), table.feature_names, pool, vectors, n_simulations=60, kind="quadratic")
    plan = plan_routing(table, 0.25, "topk", model=model)
    assert plan.strategy == "random" and "quadratic performance model has no held-out gain" in plan.fallback_reason
