"""Routing: budgets, the proxy reward model, the performance-prediction model and the plans."""

import json

import numpy as np
import pytest

from rlcore.cli import main as cli_main
from rlcore.errors import UserError
from rlcore.routing.features import RoutingComparison, build_feature_table, extract_features
from rlcore.routing.predictor import (
    Budget,
    LabelledPool,
    fit_bradley_terry,
    fit_performance_model,
    fit_routing_model,
    knapsack_mix,
    pairwise_accuracy,
    parse_budget,
    plan_routing,
    resolve_budget,
    simulate_mixes,
)


def _world(n=240, seed=0):
    """A pool where the LM judge is right everywhere except on math prompts, where it is inverted."""
    rng = np.random.default_rng(seed)
    cats = np.array(["chat", "math", "code"])[rng.integers(0, 3, n)]
    comps = [
        RoutingComparison(
            comparison_id=f"c{i}", prompt=f"{cats[i]} question", response_a="a " * int(rng.integers(1, 30)),
            response_b="b " * int(rng.integers(1, 30)), tags=[str(cats[i])],
            judge_position_disagreement=bool(i % 7 == 0), judge_confidence=float(rng.random()),
        )
        for i in range(n)
    ]
    table = build_feature_table(extract_features(comps))
    vectors = rng.normal(size=(n, 6))
    truth = (vectors @ np.array([1.0, -1.0, 0.5, 0.0, 2.0, -0.5]) > 0).astype(float)
    lm = np.where(cats == "math", 1.0 - truth, truth)
    return table, vectors, LabelledPool(comparison_ids=table.ids, human=truth.tolist(), lm=lm.tolist()), cats


@pytest.fixture(scope="module")
def fitted():
    table, vectors, pool, cats = _world()
    sims = simulate_mixes(table.matrix(), table.feature_names, pool, vectors, n_simulations=80, seed=1)
    model = fit_routing_model(table.matrix(), table.feature_names, pool, vectors, n_simulations=80, seed=1)
    return table, vectors, pool, cats, sims, model


def test_it_resolves_a_share_or_a_count_budget():
    assert resolve_budget(Budget(share=0.25), 10) == 2
    assert resolve_budget(Budget(count=10), 10) == 10
    assert resolve_budget(1.0, 10) == 10 and resolve_budget(0, 10) == 0
    assert parse_budget("25%") == Budget(share=0.25) and parse_budget("300") == Budget(count=300)


@pytest.mark.parametrize(
    "budget, field",
    [(Budget(count=11), "budget.count"), (Budget(count=-1), "budget.count"), (Budget(share=1.5), "budget.share"),
     (Budget(share=-0.1), "budget.share"), (Budget(), "budget"), (Budget(share=0.1, count=1), "budget")],
)
def test_it_names_the_budget_field_when_out_of_range(budget, field):
    with pytest.raises(UserError, match=field.replace(".", r"\.")):
        resolve_budget(budget, 10)


def test_it_rejects_a_budget_that_is_not_a_number():
    with pytest.raises(UserError, match="'lots'"):
        parse_budget("lots")


def test_it_fits_a_bradley_terry_model_that_orders_held_out_pairs():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(400, 4))
    y = (x @ np.array([2.0, -1.0, 0.0, 1.0]) > 0).astype(float)
    w = fit_bradley_terry(x[:300], y[:300])
    assert pairwise_accuracy(w, x[300:], y[300:]) > 0.9


def test_it_converges_to_the_same_weights_from_a_far_warm_start():
    # A full Newton step from a bad start overshoots; the line search must bring it back.
    rng = np.random.default_rng(1)
    x = rng.normal(size=(300, 5))
    y = (x @ rng.normal(size=5) + rng.normal(size=300) > 0).astype(float)
    cold = fit_bradley_terry(x, y)
    warm = fit_bradley_terry(x, y, init=-40 * cold)
    assert np.allclose(cold, warm, atol=1e-5)


def test_it_fills_a_knapsack_mix_to_exactly_the_budget_without_repeats():
    rng = np.random.default_rng(0)
    groups = [np.array([0, 1, 2]), np.array([2, 3]), np.array([5])]
    for budget in range(0, 8):
        mix = knapsack_mix(budget, groups, 8, rng)
        assert len(mix) == budget and len(set(mix.tolist())) == budget


def test_it_learns_that_human_labels_help_most_where_the_lm_is_wrong(fitted):
    table, _, _, _, sims, model = fitted
    coef = dict(zip(model.feature_names, model.coef))
    assert max(coef, key=coef.get) == "category=math"
    assert coef["category=math"] > coef["category=chat"] and coef["category=math"] > coef["category=code"]
    assert model.holdout_r2 is not None and model.holdout_r2 > 0.5
    # more human labels on math scored better in the simulations themselves
    math = table.feature_names.index("category=math")
    assert np.corrcoef(np.array(sims.shares)[:, math], sims.scores)[0, 1] > 0.5


def test_it_routes_the_top_gain_comparisons_to_humans_with_reasons(fitted):
    table, _, _, cats, _, model = fitted
    n_math = int((cats == "math").sum())
    plan = plan_routing(table, Budget(count=n_math), "topk", model=model)
    assert plan.n_human == n_math and plan.n_lm == len(cats) - n_math
    routed = {int(i[1:]) for i in plan.human_ids}
    assert np.mean(cats[list(routed)] == "math") > 0.9
    assert plan.predicted_gain > 0 and plan.predicted_score > plan.predicted_score_all_lm
    reason = next(r for r in plan.reasons if r.route == "human")
    assert reason.top_features[0].feature == "category=math" and reason.top_features[0].contribution > 0
    assert set(plan.human_ids).isdisjoint(plan.lm_ids)


def test_it_takes_only_positive_gains_with_optimal_pos_and_caps_them_by_the_budget(fitted):
    table, _, _, _, _, model = fitted
    plan = plan_routing(table, None, "optimal_pos", model=model)
    gains = {r.comparison_id: r.score for r in plan.reasons}
    assert all(gains[i] > 0 for i in plan.human_ids)
    assert all(gains[i] <= 0 for i in plan.lm_ids)
    capped = plan_routing(table, Budget(count=5), "optimal_pos", model=model)
    assert capped.n_human == 5 and capped.human_ids == plan.human_ids[:5]


def test_it_sends_judge_position_disagreements_to_humans_first_with_the_uncertainty_baseline():
    table, _, _, _ = _world()
    disagreements = sum(bool(r.judge_position_disagreement) for r in table.raw)
    plan = plan_routing(table, Budget(count=disagreements), "uncertainty")
    routed = {r.comparison_id for r in table.raw if r.judge_position_disagreement}
    assert set(plan.human_ids) == routed
    assert plan.predicted_gain is None


def test_it_draws_random_plans_reproducibly_from_the_seed():
    table, _, _, _ = _world()
    a = plan_routing(table, 0.3, "random", seed=4)
    assert a.human_ids == plan_routing(table, 0.3, "random", seed=4).human_ids
    assert a.human_ids != plan_routing(table, 0.3, "random", seed=5).human_ids
    assert a.n_human == int(0.3 * len(table.raw))


def test_it_refuses_topk_without_a_model_or_a_budget_too_large():
    table, _, _, _ = _world(n=20)
    with pytest.raises(UserError, match="model"):
        plan_routing(table, 0.5, "topk")
    with pytest.raises(UserError, match=r"budget\.count: 21 is more than the 20"):
        plan_routing(table, 21, "random")
    with pytest.raises(UserError, match="strategy"):
        plan_routing(table, 0.5, "vibes")


def test_it_refuses_a_pool_whose_labels_and_vectors_do_not_line_up():
    table, vectors, pool, _ = _world(n=30)
    with pytest.raises(UserError, match="must all match"):
        simulate_mixes(table.matrix(), table.feature_names, pool, vectors[:10], n_simulations=2)


def test_it_fits_and_plans_from_the_command_line(tmp_path, capsys):
    table, vectors, pool, cats = _world(n=120)
    comps = tmp_path / "comparisons.jsonl"
    with comps.open("w") as f:
        for raw, cat in zip(table.raw, cats):
            f.write(json.dumps({"comparison_id": raw.comparison_id, "prompt": f"{cat} q", "response_a": "x " * raw.len_longer,
                                "response_b": "y", "tags": [str(cat)], "judge_confidence": 0.5}) + "\n")
    labels = tmp_path / "labels.jsonl"
    code = {1.0: "A", 0.0: "B", 0.5: "tie"}
    labels.write_text("".join(json.dumps({"comparison_id": i, "human": code[h], "lm": code[m]}) + "\n"
                              for i, h, m in zip(pool.comparison_ids, pool.human, pool.lm)))
    np.save(tmp_path / "pairs.npy", vectors)
    feats, model, plan = tmp_path / "features.json", tmp_path / "model.json", tmp_path / "plan.json"
    assert cli_main(["routing", "features", str(comps), "-o", str(feats), "--no-embeddings"]) == 0
    assert cli_main(["routing", "fit", str(feats), str(labels), str(tmp_path / "pairs.npy"), "-o", str(model),
                     "--simulations", "40"]) == 0
    assert cli_main(["routing", "plan", str(feats), "--budget", "25%", "--model", str(model), "-o", str(plan),
                     "--min-pilot", "500"]) == 0
    written = json.loads(plan.read_text())
    assert written["n_human"] == 30 and written["requested_strategy"] == "topk"
    # 120 pilot comparisons are below --min-pilot 500: the plan falls back and says so, with its evidence
    assert written["strategy"] == "random" and "at least 500 are needed" in written["fallback_reason"]
    assert written["evidence"]["n_pilot"] == 120 and written["evidence"]["interval_low"] is not None
    captured = capsys.readouterr()
    assert '"kind": "progress"' in captured.out and '"type": "routing_plan"' in captured.out
    assert "routing plan: random: 30 of 120" in captured.err and "Held-out predicted gain of topk" in captured.err
    assert cli_main(["routing", "plan", str(feats), "--budget", "500", "--strategy", "random"]) == 2
    assert "budget.count: 500 is more than the 120" in capsys.readouterr().err


def test_it_names_the_line_and_field_of_a_bad_comparison(tmp_path, capsys):
    comps = tmp_path / "c.jsonl"
    comps.write_text('{"comparison_id": "c1", "prompt": "p", "response_a": "a", "response_b": "b"}\n'
                     '{"comparison_id": "c2", "prompt": "p", "response_a": "a"}\n')
    assert cli_main(["routing", "features", str(comps), "-o", str(tmp_path / "f.json"), "--no-embeddings"]) == 2
    assert "c.jsonl:2: field 'response_b'" in capsys.readouterr().err
