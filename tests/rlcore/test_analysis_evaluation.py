"""Held-out accuracy per group with Wilson intervals, and the reliability diagram, against hand
counts and scipy."""

import json
import math

import pytest
from scipy.stats import binomtest

from rlcore.analysis.evaluation import EvaluatedPair, evaluate_pairs, evaluate_source
from rlcore.analysis.inputs import ScoreTable, read_labelled_pairs
from rlcore.errors import UserError


def test_it_breaks_accuracy_down_per_group_with_counts_and_scipys_wilson_interval():
    margins = [(1.0, "math", "ann"), (2.0, "math", "bob"), (-1.0, "math", "ann"), (0.0, "chat", "bob"),
               (3.0, "chat", "ann"), (-0.5, "chat", "ann")] * 3
    pairs = [EvaluatedPair(margin=m, groups={"category": c, "annotator": a}) for m, c, a in margins]
    pairs.append(EvaluatedPair(margin=5.0, tie=True, groups={"category": "math", "annotator": "bob"}))
    e = evaluate_pairs(pairs, source="rm", min_pairs=5)
    # by hand: 18 decisive pairs, right on 1, 2, 3 (x3) and half on 0 (x3): 10.5 / 18
    assert (e.overall.accuracy, e.overall.n_pairs, e.overall.n_ties_excluded) == (10.5 / 18, 18, 1)
    math_group = next(g for g in e.by_group["category"] if g.value == "math")
    assert (math_group.accuracy, math_group.n_pairs, math_group.n_ties_excluded) == (6 / 9, 9, 1)
    reference = binomtest(6, 9).proportion_ci(method="wilson")
    assert (math_group.ci_low, math_group.ci_high) == pytest.approx((reference.low, reference.high), abs=1e-9)
    bob = next(g for g in e.by_group["annotator"] if g.value == "bob")
    # bob: margins 2.0 and 0.0, three times each: (3 + 1.5) / 6
    assert (bob.accuracy, bob.n_pairs, bob.note) == (0.75, 6, None) and bob.ci_low is not None
    bob = next(g for g in evaluate_pairs(pairs, min_pairs=7).by_group["annotator"] if g.value == "bob")
    assert (bob.accuracy, bob.n_pairs, bob.ci_low, bob.note) == (0.75, 6, None, "fewer than 7 pairs: no interval")


def test_its_reliability_diagram_has_the_hand_computed_bins():
    # confidences: sigmoid(|m|): m = 0.2 -> 0.5498 (bin [.5, .6)), m = +-2 -> 0.8808 (bin [.8, .9))
    pairs = [EvaluatedPair(margin=m) for m in (0.2, -0.2, 2.0, 2.0, -2.0, 2.0)]
    e = evaluate_pairs(pairs, min_pairs=1, bins=5)
    bins = [(b.low, b.high, b.count, b.accuracy) for b in e.reliability]
    assert bins == [(0.5, 0.6, 2, 0.5), (0.8, 0.9, 4, 0.75)]
    c1, c2 = 1 / (1 + math.exp(-0.2)), 1 / (1 + math.exp(-2.0))
    assert e.reliability[1].mean_confidence == pytest.approx(c2)
    assert e.ece == pytest.approx((2 * abs(c1 - 0.5) + 4 * abs(c2 - 0.75)) / 6)


def test_it_refuses_too_few_held_out_labels_for_an_interval():
    with pytest.raises(UserError, match=r"source 'rm-small': 3 decisive held-out labelled pairs \(1 ties left out\); "
                                        "an accuracy interval needs at least 10"):
        evaluate_pairs([EvaluatedPair(margin=1.0)] * 3 + [EvaluatedPair(margin=1.0, tie=True)], source="rm-small")


def test_it_reads_export_rows_and_groups_them_by_provenance_and_length(tmp_path):
    rows = []
    for i in range(12):
        chosen, rejected = ("long answer " * 20, "short") if i % 2 else ("short", "long answer " * 20)
        rows.append({"prompt": f"q{i}", "chosen": chosen, "rejected": rejected, "tie": False, "label_id": str(i),
                     "annotator": "ann", "provenance": json.dumps({"category": "math" if i < 6 else "chat"})})
    path = tmp_path / "held_out.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    # a length-biased scorer: always prefers the longer response
    scores = ScoreTable.from_rows("length-rm", [(r["prompt"], side, float(len(side))) for r in rows
                                                for side in (r["chosen"], r["rejected"])])
    e = evaluate_source(scores, read_labelled_pairs(path), groups=["provenance.category", "length"], min_pairs=3)
    sides = {g.value: (g.accuracy, g.n_pairs) for g in e.by_group["longer_side"]}
    assert sides == {"chosen longer": (1.0, 6), "rejected longer": (0.0, 6)}
    assert {g.value: g.n_pairs for g in e.by_group["provenance.category"]} == {"chat": 6, "math": 6}
    assert [g.value for g in e.by_group["length"]] == ["100-300"]
