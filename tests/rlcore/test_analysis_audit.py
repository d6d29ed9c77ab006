"""The ensemble label audit ("Secrets of RLHF Part II") finds planted flipped labels."""

import statistics

import numpy as np
import pytest

from rlcore.analysis.audit import audit_from_scores, audit_labels
from rlcore.analysis.inputs import LabelledPair, ScoreTable
from rlcore.errors import UserError


def test_it_finds_the_labels_planted_as_flipped_in_a_synthetic_set():
    rng = np.random.default_rng(3)
    n_prompts, k = 400, 5
    true = {(f"p{i}", y): float(rng.normal(scale=2.0)) for i in range(n_prompts) for y in ("y1", "y2")}
    members = [ScoreTable.from_rows(f"rm{j}", [(p, y, r + rng.normal(scale=0.3)) for (p, y), r in true.items()])
               for j in range(k)]
    flipped = set(rng.choice(n_prompts, size=25, replace=False).tolist())
    pairs = []
    for i in range(n_prompts):
        p = f"p{i}"
        better, worse = ("y1", "y2") if true[(p, "y1")] > true[(p, "y2")] else ("y2", "y1")
        if i in flipped:
            better, worse = worse, better
        pairs.append(LabelledPair(prompt_id=p, chosen_id=better, rejected_id=worse, label_id=f"L{i}"))
    pairs.append(LabelledPair(prompt_id="p0", chosen_id="y1", rejected_id="y2", tie=True, label_id="tie"))
    audit = audit_from_scores(members, pairs)
    flagged = {int(p.pair_id[1:]) for p in audit.pairs if p.flag == "probably_wrong"}
    # a flipped pair whose true gap is inside the members' noise is ambiguous, not wrong: allow a few
    assert len(flipped & flagged) >= 22
    # a correct label is called wrong only where the true gap is within the members' noise (sd 0.42 a margin)
    gap = {i: abs(true[(f"p{i}", "y1")] - true[(f"p{i}", "y2")]) for i in range(n_prompts)}
    assert all(gap[i] < 0.5 for i in flagged - flipped)
    assert len(flagged - flipped) <= 0.1 * len(flagged)
    assert audit.n_probably_wrong == len(flagged) and audit.n_pairs == n_prompts and audit.n_ties_excluded == 1
    near_zero = {i for i in range(n_prompts) if abs(true[(f"p{i}", "y1")] - true[(f"p{i}", "y2")]) < 0.05}
    ambiguous = {int(p.pair_id[1:]) for p in audit.pairs if p.flag == "ambiguous"}
    assert near_zero <= ambiguous | flagged
    lowest = sorted(audit.pairs, key=lambda p: p.percentile)[:10]
    assert all(p.flag == "probably_wrong" for p in lowest)


def test_its_mean_and_spread_are_the_plain_sample_statistics():
    margins = [[1.0, -2.0], [2.0, -1.0], [4.0, -0.5]]
    audit = audit_labels(margins, ["x", "y"])
    for index, pair in enumerate(audit.pairs):
        column = [m[index] for m in margins]
        assert pair.mean == pytest.approx(statistics.mean(column))
        assert pair.std == pytest.approx(statistics.stdev(column))
        assert pair.adaptive_margin == pair.mean
    # y: mean -7/6, stdev 0.764: confidently opposite at z = 1, not at z = 2
    assert [p.flag for p in audit.pairs] == ["ok", "probably_wrong"]
    assert audit_labels(margins, ["x", "y"], z=2.0).pairs[1].flag == "ambiguous"


@pytest.mark.parametrize("z, t", [(float("nan"), 0.0), (1.0, float("nan")), (-1.0, 0.0), (1.0, float("inf"))])
def test_it_refuses_thresholds_that_are_not_finite_and_non_negative(z, t):
    with pytest.raises(UserError, match="z and t must be finite and non-negative"):
        audit_labels([[1.0, -2.0], [2.0, -1.0]], ["x", "y"], z=z, t=t)


def test_it_refuses_an_ensemble_of_one_naming_the_member():
    member = ScoreTable.from_rows("rm-only", [("p", "y1", 1.0), ("p", "y2", 0.0)])
    pairs = [LabelledPair(prompt_id="p", chosen_id="y1", rejected_id="y2")]
    with pytest.raises(UserError, match=r"at least 2 members; got 1 \('rm-only'\)"):
        audit_from_scores([member], pairs)
    with pytest.raises(UserError, match="at least 2 members"):
        audit_labels([[1.0]], ["x"])


def test_it_names_the_member_and_pair_that_lack_a_score():
    a = ScoreTable.from_rows("a", [("p", "y1", 1.0), ("p", "y2", 0.0)])
    b = ScoreTable.from_rows("b", [("p", "y1", 1.0)])
    pairs = [LabelledPair(prompt_id="p", chosen_id="y1", rejected_id="y2", label_id="L7")]
    with pytest.raises(UserError, match=r"member 'b' has no score for prompt 'p', response 'y2' \(labelled pair L7\)"):
        audit_from_scores([a, b], pairs)
