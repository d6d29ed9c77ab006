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


def test_it_reports_every_bad_field_of_a_label_record(tmp_path):
    path = tmp_path / "labels.jsonl"
    path.write_text('{"comparison_id": "c1", "rater_id": "a", "rater_kind": "human", "value": "A"}\n'
                    '{"comparison_id": "c1", "rater_kind": "robot", "value": "A"}\n')
    with pytest.raises(UserError) as raised:
        read_label_records(path)
    assert str(raised.value).splitlines() == [
        f"{path}:2: field 'rater_id': Field required",
        f"{path}:2: field 'rater_kind': Input should be 'human' or 'lm'",
    ]


def _random_labels(n_units: int, seed: int):
    """3 people and 2 LM judges, each labelling a unit with probability 0.6, mostly agreeing with a latent truth."""
    import random

    rng = random.Random(seed)
    raters = [("h0", "human"), ("h1", "human"), ("h2", "human"), ("lm0", "lm"), ("lm1", "lm")]
    records = []
    for u in range(n_units):
        truth = rng.choice("ABBt")
        for rater, kind in raters:
            if rng.random() < 0.6:
                value = truth if rng.random() < 0.7 else rng.choice(["A", "B", "tie"])
                records.append(LabelRecord(comparison_id=f"c{u}", rater_id=rater, rater_kind=kind,
                                           value="tie" if value == "t" else value))
    return records, [r for r, _ in raters]


def _flat(tree, prefix=""):
    """A nested report as {path: number}, so pytest.approx can compare it."""
    if isinstance(tree, dict):
        return {k: v for key, sub in tree.items() for k, v in _flat(sub, f"{prefix}{key}.").items()}
    if isinstance(tree, list):
        return {k: v for i, sub in enumerate(tree) for k, v in _flat(sub, f"{prefix}{i}.").items()}
    return {prefix: tree if isinstance(tree, (int, float)) or tree is None else hash(tree)}


def test_the_streamed_report_equals_the_krippendorff_package_sklearn_kappa_and_a_hand_count():
    """Labels streamed one comparison at a time (never held) give the reference numbers: alpha from the
    `krippendorff` package (all raters; people only for human-human; judges only for lm-lm), Light's kappa
    as the mean of sklearn's cohen_kappa_score over rater pairs, percent agreement counted by hand."""
    import random
    from itertools import combinations

    import numpy as np
    krippendorff = pytest.importorskip("krippendorff")
    from sklearn.metrics import cohen_kappa_score

    records, raters = _random_labels(3000, seed=7)
    streamed = agreement_report(iter(records), grouped=True)  # records are made in comparison order
    shuffled = records[:]
    random.Random(1).shuffle(shuffled)
    # the in-memory regrouping gives the same report (to rounding: sums are taken in another order)
    regrouped = agreement_report(shuffled)
    assert _flat(regrouped.model_dump()) == pytest.approx(_flat(streamed.model_dump()), abs=1e-12)

    code = {"A": 0.0, "B": 1.0, "tie": 2.0}
    grid = {r: np.full(3000, np.nan) for r in raters}
    for rec in records:
        grid[rec.rater_id][int(rec.comparison_id[1:])] = code[rec.value]

    def alpha(names):
        return krippendorff.alpha(reliability_data=np.array([grid[n] for n in names]), level_of_measurement="nominal")

    assert streamed.overall.krippendorff_alpha == pytest.approx(alpha(raters), abs=1e-12)
    assert streamed.by_pair_kind["human-human"].krippendorff_alpha == pytest.approx(alpha(["h0", "h1", "h2"]),
                                                                                    abs=1e-12)
    assert streamed.by_pair_kind["lm-lm"].krippendorff_alpha == pytest.approx(alpha(["lm0", "lm1"]), abs=1e-12)

    kappas, agree, total = [], 0, 0
    for a, b in combinations(raters, 2):
        both = ~np.isnan(grid[a]) & ~np.isnan(grid[b])
        kappas.append(cohen_kappa_score(grid[a][both], grid[b][both]))
        agree += int((grid[a][both] == grid[b][both]).sum())
        total += int(both.sum())
    assert streamed.overall.cohen_kappa == pytest.approx(sum(kappas) / len(kappas), abs=1e-12)
    assert streamed.overall.n_rater_pairs == 10
    assert (streamed.overall.n_pairs, streamed.overall.percent_agreement) == (total, pytest.approx(agree / total))
    h0 = next(a for a in streamed.per_annotator if a.rater_id == "h0")
    assert h0.n_labels == int((~np.isnan(grid["h0"])).sum())
    assert h0.stats.cohen_kappa == pytest.approx(sum(kappas[:4]) / 4, abs=1e-12)  # h0's pairs come first


def test_a_streamed_report_holds_no_more_memory_for_ten_times_the_labels():
    """Peak traced memory of a report over 40,000 labels is within 256 KB of one over 4,000 (it was ~0.36 KB
    per label, an index of every comparison)."""
    import tracemalloc

    def peak(n_units: int) -> int:
        def records():
            for u in range(n_units):
                for rater, value in (("ann", "AB"[u % 2]), ("bob", "A"), ("gpt", "AB"[u % 3 == 0])):
                    yield LabelRecord(comparison_id=str(u), rater_id=rater, rater_kind="lm" if rater == "gpt" else
                                      "human", value=value)
        tracemalloc.start()
        try:
            report = agreement_report(records(), grouped=True)
            return tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
            assert report.overall.n_pairs == 3 * n_units

    small, large = peak(4_000 // 3), peak(40_000 // 3)
    assert large - small < 256 * 1024, (small, large)
