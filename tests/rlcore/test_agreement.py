"""Agreement statistics against hand-computed values and Krippendorff's (2011) worked examples."""

import pytest

from rlcore.agreement import (
    LabelRecord,
    agreement_report,
    cohen_kappa,
    human_lm_agreement_by_feature,
    krippendorff_alpha,
    percent_agreement,
    read_label_records,
    signed_strength,
)
from rlcore.errors import UserError

# Krippendorff, "Computing Krippendorff's Alpha-Reliability" (2011), section C:
# 4 observers x 12 units, values 1..5, '.' = missing. Published: nominal .743, ordinal .815, interval .849.
_ = None
KRIPP_2011 = [
    [1, 2, 3, 3, 2, 1, 4, 1, 2, _, _, _],
    [1, 2, 3, 3, 2, 2, 4, 1, 2, 5, _, 3],
    [_, 3, 3, 3, 2, 3, 4, 2, 2, 5, 1, _],
    [1, 2, 3, 3, 2, 4, 4, 1, 2, 5, 1, _],
]


def _units(rows):
    return {u: [row[u] for row in rows if row[u] is not None] for u in range(len(rows[0]))}


def _records(rows, kinds=None):
    kinds = kinds or ["human"] * len(rows)
    return [
        LabelRecord(comparison_id=f"c{u}", rater_id=f"r{i}", rater_kind=kinds[i], value=v)
        for i, row in enumerate(rows)
        for u, v in enumerate(row)
        if v is not None
    ]


def test_it_reproduces_krippendorffs_2011_example_for_every_level():
    units = _units(KRIPP_2011)
    assert krippendorff_alpha(units, "nominal") == pytest.approx(0.743, abs=5e-4)
    assert krippendorff_alpha(units, "ordinal") == pytest.approx(0.815, abs=5e-4)
    assert krippendorff_alpha(units, "interval") == pytest.approx(0.849, abs=5e-4)


def test_it_reproduces_krippendorffs_binary_two_observer_example():
    # Section A of the same paper: alpha = 0.095.
    a = [0, 1, 0, 0, 0, 0, 0, 0, 1, 0]
    b = [1, 1, 1, 0, 0, 1, 0, 0, 0, 0]
    assert krippendorff_alpha({i: [x, y] for i, (x, y) in enumerate(zip(a, b))}) == pytest.approx(0.095, abs=5e-4)


def test_it_computes_cohens_kappa_by_hand():
    # 6 items: agree on 1,2,3,4 (A,A,B,tie), disagree on 5 (A vs B), 6 (B vs tie).
    # p_o = 4/6. rater1: A3 B2 tie1, rater2: A2 B2 tie2 -> p_e = (3*2 + 2*2 + 1*2)/36 = 12/36.
    # kappa = (4/6 - 1/3) / (1 - 1/3) = 0.5
    r1 = ["A", "A", "B", "tie", "A", "B"]
    r2 = ["A", "A", "B", "tie", "B", "tie"]
    assert cohen_kappa(r1, r2) == pytest.approx(0.5)


def test_it_skips_missing_labels_in_kappa_and_is_undefined_for_constant_raters():
    assert cohen_kappa(["A", None, "B"], ["A", "B", "B"]) == pytest.approx(1.0)
    assert cohen_kappa(["A", "A", "A"], ["A", "A", "A"]) is None
    with pytest.raises(UserError, match="differ in length"):
        cohen_kappa(["A"], ["A", "B"])


def test_it_computes_percent_agreement_over_all_pairs_in_a_unit():
    # u1: A,A,B -> pairs AA(agree) AB AB: 1/3; u2: B,B -> 1/1; u3 has one label -> ignored. Total 2/4.
    assert percent_agreement({"u1": ["A", "A", "B"], "u2": ["B", "B"], "u3": ["A"]}) == pytest.approx(0.5)


def test_it_uses_rank_distance_for_ordinal_alpha():
    # Signed strength -2..2. Two raters, 4 units: (-2,-2) (-1,-2) (1,1) (2,1).
    # Values: -2 x3, -1 x1, 1 x3, 2 x1; n = 8.
    # ordinal delta^2(c,k) = (sum_{g=c..k} n_g - (n_c + n_k)/2)^2:
    #   (-1,-2): (4 - 2)^2 = 4;  (2,1): (4 - 2)^2 = 4.  D_o numerator = 2*4 + 2*4 = 16.
    # expected sum_{c,k} n_c n_k delta^2, over ordered pairs (both directions):
    #   (-2,-1): 3*1*(4-2)^2=12   (-2,1): 3*3*(7-3)^2=144   (-2,2): 3*1*(8-2)^2=108
    #   (-1,1): 1*3*(4-2)^2=12    (-1,2): 1*1*(5-1)^2=16    (1,2): 3*1*(4-2)^2=12   -> 304, x2 = 608
    # alpha = 1 - (n-1) * 16 / 608 = 1 - 7*16/608 = 0.815789...
    units = {"u1": [-2, -2], "u2": [-1, -2], "u3": [1, 1], "u4": [2, 1]}
    assert krippendorff_alpha(units, "ordinal") == pytest.approx(1 - 7 * 16 / 608)
    # nominal alpha sees the near misses as full disagreements and is lower
    assert krippendorff_alpha(units, "nominal") < krippendorff_alpha(units, "ordinal")


def test_it_orders_named_ordinal_categories_with_an_explicit_order():
    order = ["A>>B", "A>B", "tie", "B>A", "B>>A"]
    named = {"u1": ["A>>B", "A>B"], "u2": ["B>A", "B>A"], "u3": ["tie", "B>>A"]}
    numeric = {"u1": [-2, -1], "u2": [1, 1], "u3": [0, 2]}
    assert krippendorff_alpha(named, "ordinal", order=order) == pytest.approx(krippendorff_alpha(numeric, "ordinal"))
    with pytest.raises(UserError, match="missing from `order`"):
        krippendorff_alpha(named, "ordinal", order=["A>>B"])


def test_it_converts_choices_with_strength_to_signed_values():
    assert [signed_strength("A", 2), signed_strength("B", 3), signed_strength("tie")] == [-2, 3, 0]
    with pytest.raises(UserError, match="'C'"):
        signed_strength("C")


def test_it_splits_agreement_into_human_human_human_lm_and_lm_lm():
    # h1, h2 humans; j1, j2 LM judges; 4 comparisons.
    #   c1: h1 A, h2 A, j1 A, j2 A
    #   c2: h1 B, h2 B, j1 A, j2 A      (LMs agree with each other, not with humans)
    #   c3: h1 A, h2 B, j1 B, j2 B
    #   c4: h1 B, h2 B, j1 B, j2 B
    rows = [
        ["A", "B", "A", "B"],  # h1
        ["A", "B", "B", "B"],  # h2
        ["A", "A", "B", "B"],  # j1
        ["A", "A", "B", "B"],  # j2
    ]
    report = agreement_report(_records(rows, ["human", "human", "lm", "lm"]))
    hh, hl, ll = (report.by_pair_kind[k] for k in ("human-human", "human-lm", "lm-lm"))
    # human-human: agree on c1, c2, c4 -> 3/4. kappa(h1,h2): p_o=3/4; h1 A2 B2, h2 A1 B3 -> p_e=8/16 -> 0.5
    assert hh.percent_agreement == pytest.approx(0.75) and hh.cohen_kappa == pytest.approx(0.5)
    # lm-lm: identical -> 1.0 everywhere
    assert ll.percent_agreement == 1.0 and ll.cohen_kappa == pytest.approx(1.0) and ll.krippendorff_alpha == pytest.approx(1.0)
    # human-lm: 4 pairs per comparison. c1 4/4, c2 0/4, c3 h1-j 0/2 h2-j 2/2 -> 2/4, c4 4/4 -> 10/16
    assert hl.percent_agreement == pytest.approx(10 / 16) and hl.n_pairs == 16 and hl.n_rater_pairs == 4
    # kappas: (h1,j*): p_o=2/4, p_e=(2*2+2*2)/16=.5 -> 0 ; (h2,j*): p_o=3/4, h2 A1 B3, j A2 B2 -> p_e=.5 -> .5
    assert hl.cohen_kappa == pytest.approx(0.25)
    # alpha over cross pairs: each comparison has 2 humans x 2 LMs, ordered cross pairs = 8, weight 4/8.
    # c1: AA x8 -> A-A 4; c2: BA,AB x4 each -> A-B 2, B-A 2; c3: h1(A)-j(B) 2 pairs each way -> A-B 1, B-A 1,
    # h2(B)-j(B) 4 ordered -> B-B 2; c4: B-B 4. Marginals: A = 4+2+1 = 7, B = 2+1+2+4 = 9, n = 16.
    # alpha = 1 - (n-1) * (o_AB + o_BA) / (2 n_A n_B) = 1 - 15 * 6 / 126
    assert hl.krippendorff_alpha == pytest.approx(1 - 15 * 6 / 126)
    assert report.overall.n_pairs == 24  # 6 pairs per comparison


def test_it_reports_each_annotators_agreement_with_the_others():
    rows = [
        ["A", "B", "A", "B"],  # r0 agrees with r1 everywhere
        ["A", "B", "A", "B"],  # r1
        ["B", "A", "B", "A"],  # r2 contrarian
    ]
    report = agreement_report(_records(rows))
    by_id = {a.rater_id: a for a in report.per_annotator}
    # r0: pairs with r1 (4 agree) and r2 (0 agree) -> 4/8
    assert by_id["r0"].stats.percent_agreement == pytest.approx(0.5)
    assert by_id["r2"].stats.percent_agreement == 0.0
    assert by_id["r2"].stats.cohen_kappa == pytest.approx(-1.0)
    assert by_id["r0"].n_labels == 4 and by_id["r0"].rater_kind == "human"


def test_it_equals_plain_alpha_when_one_human_and_one_lm_label_each_comparison():
    rows = [["A", "B", "A", "tie", "B", "A"], ["A", "B", "B", "tie", "B", "B"]]
    report = agreement_report(_records(rows, ["human", "lm"]))
    plain = krippendorff_alpha(_units(rows))
    assert report.by_pair_kind["human-lm"].krippendorff_alpha == pytest.approx(plain)
    assert report.by_pair_kind["human-human"].krippendorff_alpha is None


def test_it_refuses_a_rater_recorded_as_both_human_and_lm():
    recs = [
        LabelRecord(comparison_id="c1", rater_id="x", rater_kind="human", value="A"),
        LabelRecord(comparison_id="c2", rater_id="x", rater_kind="lm", value="A"),
    ]
    with pytest.raises(UserError, match="'x'.*rater_kind"):
        agreement_report(recs)


def test_it_slices_human_lm_agreement_by_routing_feature():
    rows = [["A", "B", "A", "B"], ["A", "B", "B", "A"]]
    feats = {"c0": ["category=chat"], "c1": ["category=chat"], "c2": ["category=math"], "c3": ["category=math"]}
    by = human_lm_agreement_by_feature(_records(rows, ["human", "lm"]), feats)
    assert by["category=chat"].percent_agreement == 1.0
    assert by["category=math"].percent_agreement == 0.0


def test_it_names_file_line_and_field_of_a_bad_label_record(tmp_path):
    path = tmp_path / "labels.jsonl"
    path.write_text(
        '{"comparison_id": "c1", "rater_id": "a", "rater_kind": "human", "value": "A"}\n'
        '{"comparison_id": "c1", "rater_id": "b", "rater_kind": "robot", "value": "A"}\n'
    )
    with pytest.raises(UserError, match=r"labels.jsonl:2: field 'rater_kind'"):
        read_label_records(path)
