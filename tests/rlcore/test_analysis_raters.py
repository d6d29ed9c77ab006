"""Dawid-Skene recovers planted rater accuracies; gold items score annotators."""

import numpy as np
import pytest
from scipy.stats import binomtest

from rlcore.analysis.raters import RaterLabel, fit_dawid_skene, score_gold
from rlcore.errors import UserError

CLASSES = ["a", "b", "tie"]
TOLERANCE = 0.05  # absolute, on accuracies estimated from about 500 labels per rater


def planted(n_items=3000, n_raters=30, per_item=5, seed=4):
    rng = np.random.default_rng(seed)
    priors = np.array([0.45, 0.4, 0.15])
    truth = rng.choice(3, size=n_items, p=priors)
    confusions = []
    for r in range(n_raters):
        diagonal = rng.uniform(0.5, 0.95, size=3)
        matrix = np.empty((3, 3))
        for k in range(3):
            rest = rng.dirichlet(np.ones(2)) * (1 - diagonal[k])
            matrix[k] = np.insert(rest, k, diagonal[k])
        confusions.append(matrix)
    items, raters, values = [], [], []
    for i in range(n_items):
        for r in rng.choice(n_raters, size=per_item, replace=False):
            items.append(f"c{i}")
            raters.append(f"r{r:02d}")
            values.append(CLASSES[rng.choice(3, p=confusions[r][truth[i]])])
    accuracy = {f"r{r:02d}": float(priors @ np.diag(confusions[r])) for r in range(n_raters)}
    return items, raters, values, truth, accuracy, confusions


def test_it_recovers_planted_rater_accuracies_within_the_stated_tolerance():
    items, raters, values, truth, accuracy, confusions = planted()
    fit = fit_dawid_skene(item_ids=items, raters=raters, values=values)
    assert fit.converged and fit.classes == CLASSES and fit.n_labels == len(items)
    errors = [abs(r.accuracy - accuracy[r.rater]) for r in fit.raters]
    assert max(errors) < TOLERANCE, max(errors)
    est = {r.rater: np.array(r.confusion) for r in fit.raters}
    assert max(np.abs(est[f"r{r:02d}"] - confusions[r]).max() for r in range(30)) < 0.2
    # the model's item labels beat the plain majority vote against the truth
    by_item = {}
    for i, v in zip(items, values):
        by_item.setdefault(i, []).append(v)
    majority = np.mean([max(CLASSES, key=by_item[f"c{i}"].count) == CLASSES[t] for i, t in enumerate(truth)])
    estimated = {x.item_id: x.label for x in fit.items}
    ds = np.mean([estimated[f"c{i}"] == CLASSES[t] for i, t in enumerate(truth)])
    assert ds > majority
    assert sum(r.n_labels for r in fit.raters) == len(items)


def test_its_first_em_step_matches_a_hand_computation():
    # two items, two raters; vote-share start gives T = [[1, 0], [.5, .5]] for classes (a, b)
    labels = [RaterLabel(item_id="1", rater="x", label="a"), RaterLabel(item_id="1", rater="y", label="a"),
              RaterLabel(item_id="2", rater="x", label="a"), RaterLabel(item_id="2", rater="y", label="b")]
    fit = fit_dawid_skene(labels, max_iter=1, smoothing=0.0)
    # M: pi = (.75, .25); theta_x = [[1, 0], [1, 0]] (x always said a); theta_y = [[2/3, 1/3], [0, 1]]
    # E item 2: a: .75 * 1 * 1/3 = .25; b: .25 * 1 * 1 = .25 -> (.5, .5); item 1: b has theta_y[b][a] = 0 -> (1, 0)
    assert fit.items[0].probabilities == pytest.approx([1.0, 0.0])
    assert fit.items[1].probabilities == pytest.approx([0.5, 0.5])
    x = next(r for r in fit.raters if r.rater == "x")
    assert np.array(x.confusion) == pytest.approx(np.array([[1.0, 0.0], [1.0, 0.0]]))


def test_it_fits_a_large_set_in_memory_proportional_to_the_labels():
    items, raters, values, *_ = planted(n_items=4000, n_raters=200, per_item=5, seed=5)
    fit = fit_dawid_skene(item_ids=items, raters=raters, values=values, max_iter=50)
    assert len(fit.raters) == 200 and len(fit.items) == 4000


def test_it_refuses_labels_outside_a_b_tie_and_a_single_class():
    with pytest.raises(UserError, match="label 'ranking'"):
        fit_dawid_skene(item_ids=["1"], raters=["x"], values=["ranking"])
    with pytest.raises(UserError, match="every label is 'a'"):
        fit_dawid_skene(item_ids=["1", "2"], raters=["x", "y"], values=["a", "a"])


def test_it_scores_annotators_on_gold_items_with_counts_and_a_wilson_interval():
    labels = [RaterLabel(item_id=i, rater=r, label=v) for i, r, v in [
        ("g1", "ann", "a"), ("g2", "ann", "b"), ("g3", "ann", "tie"), ("n1", "ann", "a"),
        ("g1", "bob", "b"), ("n1", "bob", "a"), ("n2", "cat", "a")]]
    scores = score_gold(labels, {"g1": "a", "g2": "b", "g3": "a", "g4": "b"})
    by = {s.rater: s for s in scores.raters}
    assert (by["ann"].n_gold_labels, by["ann"].n_correct, by["ann"].n_tie_answers) == (3, 2, 1)
    assert (by["bob"].n_gold_labels, by["bob"].n_correct) == (1, 0)
    reference = binomtest(2, 3).proportion_ci(method="wilson")
    assert (by["ann"].ci_low, by["ann"].ci_high) == pytest.approx((reference.low, reference.high), abs=1e-9)
    assert scores.raters_without_gold == ["cat"]
    assert (scores.n_gold_items, scores.n_gold_items_labelled) == (4, 3)


def test_it_refuses_a_gold_item_whose_answer_is_a_tie_naming_it():
    with pytest.raises(UserError, match="gold item 'g9' has answer 'tie'"):
        score_gold([RaterLabel(item_id="g9", rater="ann", label="tie")], {"g9": "tie"})
