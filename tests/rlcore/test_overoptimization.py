"""Over-optimisation report (Gao et al. 2022) on a planted case: a proxy that pays for length, a gold
judge that does not. Figures are checked against hand computation, not against the module itself."""

import json
import math
import subprocess
import sys

import numpy as np
import pytest

from rlcore.analysis.overoptimization import (OveroptSettings, SampleScore, analyse_overoptimization, distinct_n,
                                              read_samples)
from rlcore.errors import UserError

STEPS = [0, 100, 200, 300, 400]
# words per completion at each checkpoint: the policy learns to pad
LENGTH = {0: 10, 100: 20, 200: 30, 300: 60, 400: 90}
# gold (a judge that reads content) improves, then falls as the padding repeats itself
GOLD = {0: 0.30, 100: 0.50, 200: 0.70, 300: 0.45, 400: 0.20}


def planted_samples(prompts=8):
    rows = []
    for step in STEPS:
        for i in range(prompts):
            words = LENGTH[step]
            unique = min(words, 10 + step // 20)  # padding repeats "very good" once the content runs out
            text = " ".join([f"w{i}_{k}" for k in range(unique)] + ["very", "good"] * ((words - unique) // 2))
            length_reward = 0.05 * len(text.split())  # the proxy pays per word
            format_rule = 1.0  # a rule that is always satisfied
            rows.append(SampleScore(
                checkpoint=f"checkpoint-{step}", step=step, prompt_id=f"p{i}", response_id=f"r{step}-{i}",
                completion=text, proxy=length_reward + format_rule,
                components={"length_bonus": length_reward, "format": format_rule},
                gold=GOLD[step] + (0.02 if i % 2 else -0.02),
                logprobs=[-1.0 + step / 1000] * 4, ref_logprobs=[-1.0] * 4))
    return rows


def test_it_flags_the_gold_peak_while_proxy_keeps_rising():
    report = analyse_overoptimization(planted_samples())
    assert report.peak.flagged
    assert report.peak.checkpoint == "checkpoint-200"
    assert report.peak.later_checkpoint == "checkpoint-400"  # the largest drop with the proxy higher
    # gold 0.70 -> 0.20, each checkpoint's spread +-0.02 (sample s.d. of 4 x -0.02, 4 x +0.02 over 8)
    sd = math.sqrt(8 * 0.02 ** 2 / 7)
    assert report.peak.drop == pytest.approx(0.5)
    assert report.peak.drop_threshold == pytest.approx(1.959964 * math.sqrt(2) * sd / math.sqrt(8), rel=1e-5)
    proxies = [c.proxy.mean for c in report.checkpoints]
    assert proxies == sorted(proxies)


def test_it_flags_the_length_symptom_and_the_dominating_component():
    report = analyse_overoptimization(planted_samples())
    symptoms = {s.kind: s for s in report.symptoms}
    assert symptoms["length"].flagged
    assert (symptoms["length"].first, symptoms["length"].last) == (10, 90)
    dominance = symptoms["dominance"]
    # at step 400: length_bonus 0.05 * 90 = 4.5 vs format 1.0 -> 4.5 / 5.5
    assert dominance.flagged and dominance.component == "length_bonus"
    assert dominance.last == pytest.approx(4.5 / 5.5)
    assert dominance.first == pytest.approx(0.5 / 1.5)


def test_it_measures_repetition_as_distinct_bigrams():
    report = analyse_overoptimization(planted_samples())
    last = report.checkpoints[-1]
    # step 400: 30 unique words then 30 x "very good"; per completion 89 bigrams:
    # 29 among the unique words, 1 joining them to "very", then "very good"/"good very" repeat
    # the "w{i}_k" bigrams differ across prompts; "very good" and "good very" are shared
    distinct = 8 * (29 + 1) + 2
    assert last.bigrams == 8 * 89
    assert last.distinct_2 == pytest.approx(distinct / (8 * 89))
    assert {s.kind: s for s in report.symptoms}["repetition"].flagged
    assert distinct_n(["a b a b", "a b"]) == (2 / 4, 4)


def test_it_estimates_kl_per_token_from_sample_logprobs():
    samples = [
        SampleScore(checkpoint="a", step=0, prompt_id="p", proxy=0, gold=0, logprobs=[-1, -2], ref_logprobs=[-1, -2]),
        SampleScore(checkpoint="b", step=1, prompt_id="p", proxy=1, gold=0, logprobs=[-0.5, -1.0, -3.0],
                    ref_logprobs=[-1.0, -2.0, -2.0]),
        SampleScore(checkpoint="b", step=1, prompt_id="q", proxy=1, gold=0, kl=0.25, tokens=1),
    ]
    report = analyse_overoptimization(samples)
    b = report.checkpoints[1]
    # (0.5 + 1.0 - 1.0 + 0.25) over 4 tokens
    assert b.kl == pytest.approx(0.75 / 4)
    assert b.sqrt_kl == pytest.approx(math.sqrt(0.75 / 4))
    assert b.kl_tokens == 4
    assert "k1" in report.kl_estimator


def test_it_flags_a_rule_satisfied_while_the_judge_disagrees():
    report = analyse_overoptimization(planted_samples(), OveroptSettings(rule_components=["format"]))
    rule = [s for s in report.symptoms if s.kind == "rule_disagreement"][0]
    # start median gold is 0.30; at step 400 every gold (0.18/0.22) is below it, at step 0 half are
    assert report.gold_threshold == pytest.approx(0.30)
    assert (rule.first, rule.last) == (0.5, 1.0)
    assert rule.flagged


def test_it_lists_the_largest_proxy_gold_gaps_with_their_components():
    samples = planted_samples()
    report = analyse_overoptimization(samples)
    proxy = np.array([s.proxy for s in samples])
    gold = np.array([s.gold for s in samples])
    gaps = (proxy - proxy.mean()) / proxy.std() - (gold - gold.mean()) / gold.std()
    assert report.gap_samples[0].gap == pytest.approx(gaps.max())
    assert report.gap_samples[0].checkpoint == "checkpoint-400"
    assert set(report.gap_samples[0].components) == {"length_bonus", "format"}
    assert [g.gap for g in report.gap_samples] == sorted((g.gap for g in report.gap_samples), reverse=True)


def test_it_leaves_samples_without_gold_out_of_gold_figures_and_counts_them():
    samples = planted_samples()
    for s in samples[:3]:
        s.gold = None
    report = analyse_overoptimization(samples)
    assert report.samples_without_gold == 3
    first = report.checkpoints[0]
    assert (first.gold_missing, first.gold.n, first.n) == (3, 5, 8)
    assert first.gold.mean == pytest.approx(np.mean([s.gold for s in samples[3:8]]))


def test_it_does_not_flag_a_peak_inside_the_noise():
    samples = [SampleScore(checkpoint=f"c{s}", step=s, prompt_id=f"p{i}", proxy=s, gold=g, kl=s, tokens=1)
               for s, golds in ((0, [0.0, 1.0, 0.5]), (1, [0.1, 0.9, 0.45])) for i, g in enumerate(golds)]
    peak = analyse_overoptimization(samples).peak
    assert peak.checkpoint == "c0" and not peak.flagged


def test_it_refuses_one_checkpoint_and_bad_rows(tmp_path):
    with pytest.raises(UserError, match="only one checkpoint"):
        analyse_overoptimization(planted_samples()[:8])
    with pytest.raises(UserError, match="not components"):
        analyse_overoptimization(planted_samples(), OveroptSettings(rule_components=["nope"]))
    path = tmp_path / "s.jsonl"
    path.write_text(json.dumps({"checkpoint": "a", "step": 0, "prompt_id": "p", "proxy": 1}) + "\n")
    with pytest.raises(UserError, match=r"s.jsonl:1: .*logprobs"):
        read_samples(path)


def test_the_cli_prints_the_report(tmp_path):
    path = tmp_path / "scored.jsonl"
    path.write_text("".join(s.model_dump_json() + "\n" for s in planted_samples()))
    done = subprocess.run([sys.executable, "-m", "rlcore", "analysis", "overopt", "--samples", str(path),
                           "--rule", "format", "--top", "3"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["peak"]["flagged"] and report["peak"]["checkpoint"] == "checkpoint-200"
    assert len(report["gap_samples"]) == 3
    bad = subprocess.run([sys.executable, "-m", "rlcore", "analysis", "overopt", "--samples", str(tmp_path / "x")],
                         capture_output=True, text=True, timeout=120)
    assert bad.returncode != 0 and "file not found" in bad.stderr


def hand_wilson(successes: float, n: int, z: float = 1.959963984540054) -> tuple[float, float]:
    """Wilson (1927), written out: (p + z^2/2n +- z sqrt(p(1-p)/n + z^2/4n^2)) / (1 + z^2/n)."""
    p = successes / n
    centre = p + z * z / (2 * n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return (centre - half) / (1 + z * z / n), (centre + half) / (1 + z * z / n)


def human_gold_case(n_labels: int):
    """Start + three checkpoints; proxy rises throughout; people's win rate vs start 0.5, 0.7, 0.55. Per sample,
    the head-to-head label of its comparison (won 1, tie 0.5, lost 0); sample 3 of each checkpoint unlabelled."""
    from rlcore.analysis.overoptimization import CheckpointGold

    rates = {"checkpoint-100": 0.5, "checkpoint-200": 0.7, "checkpoint-300": 0.55}
    rows, gold = [], {}
    for step in (0, 100, 200, 300):
        name = "start" if step == 0 else f"checkpoint-{step}"
        for i in range(4):
            label = None if step == 0 or i == 3 else [1.0, 0.5, 0.0][i]
            if step == 300 and i == 2:
                label = 0.0
            rows.append(SampleScore(checkpoint=name, step=step, prompt_id=str(i), response_id=f"{name}/{i}",
                                    completion="w " * (5 + step // 50), proxy=step / 100 + 0.01 * i,
                                    components={"rule": 1.0 if step else 0.0,
                                                "len": step / 100 + 0.01 * i - 1.0 * bool(step)},
                                    gold=label, kl=step / 1000, tokens=5))
        if step:
            low, high = hand_wilson(rates[name] * n_labels, n_labels)
            gold[name] = CheckpointGold(value=rates[name], low=low, high=high, n=n_labels)
    return rows, gold


def test_per_checkpoint_human_win_rates_flag_the_peak_with_the_wilson_interval():
    rows, gold = human_gold_case(400)
    report = analyse_overoptimization(rows, OveroptSettings(rule_components=["rule"]), checkpoint_gold=gold,
                                      gold_threshold=0.5)
    by = {c.checkpoint: c for c in report.checkpoints}
    assert by["start"].gold is None  # the reference has no win rate against itself
    assert by["checkpoint-200"].gold.mean == 0.7 and by["checkpoint-200"].gold.n == 400
    # by hand: Wilson half-widths as normal s.e. (width / 3.92), drop 0.7 - 0.55 = 0.15 against 1.96 combined s.e.
    l2, h2 = hand_wilson(280, 400)
    l3, h3 = hand_wilson(220, 400)
    se2, se3 = (h2 - l2) / 3.919927969, (h3 - l3) / 3.919927969
    threshold = 1.959963984540054 * math.sqrt(se2 ** 2 + se3 ** 2)
    assert 0.06 < threshold < 0.07  # about 1.96 * sqrt(.7*.3/400 + .55*.45/400) = 0.066
    assert report.peak.flagged and report.peak.checkpoint == "checkpoint-200"
    assert report.peak.later_checkpoint == "checkpoint-300"
    assert report.peak.drop == pytest.approx(0.15) and report.peak.drop_threshold == pytest.approx(threshold)
    assert report.gold_per_checkpoint == "wilson"
    # per-sample gold = head-to-head labels: unlabelled samples are named and left out of the gaps
    assert report.samples_without_gold_ids == ["start/start/0", "start/start/1", "start/start/2", "start/start/3",
                                               "checkpoint-100/checkpoint-100/3", "checkpoint-200/checkpoint-200/3",
                                               "checkpoint-300/checkpoint-300/3"]
    assert len(report.gap_samples) == 9 and all(g.response_id[-1] != "3" for g in report.gap_samples)
    # largest z(proxy) - z(gold): highest proxy with a lost label (checkpoint-300 sample 2, proxy 3.02, gold 0)
    assert (report.gap_samples[0].checkpoint, report.gap_samples[0].prompt_id) == ("checkpoint-300", "2")
    # rule satisfied while lost (< 0.5): checkpoint-300 has samples 0 won, 1 tie, 2 lost -> 1 of 3
    assert by["checkpoint-300"].rule_disagreement["rule"] == pytest.approx(1 / 3)


def test_wide_wilson_intervals_do_not_flag_the_same_win_rates():
    rows, gold = human_gold_case(20)  # 14 of 20 vs 11 of 20: drop 0.15 is inside the noise
    report = analyse_overoptimization(rows, checkpoint_gold=gold, gold_threshold=0.5)
    assert report.peak.checkpoint == "checkpoint-200" and not report.peak.flagged


def test_checkpoint_gold_naming_an_unscored_checkpoint_is_refused():
    rows, gold = human_gold_case(20)
    with pytest.raises(UserError, match="checkpoint-999"):
        analyse_overoptimization(rows, checkpoint_gold={**gold, "checkpoint-999": gold["checkpoint-100"]})
