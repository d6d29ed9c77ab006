"""Routing features: lengths, lexical and embedding similarity, tags, judge and reward-model signals."""

import numpy as np
import pytest

from rlcore.errors import UserError
from rlcore.routing.features import (
    RoutingComparison,
    active_features,
    build_feature_table,
    default_embedding_model,
    embed_responses,
    embed_texts,
    extract_features,
    fit_bins,
    lcs_length,
    rouge_l_f1,
)


def _lcs_dp(a, b):
    table = [[0] * (len(b) + 1) for _ in range(len(a) + 1)]
    for i, x in enumerate(a):
        for j, y in enumerate(b):
            table[i + 1][j + 1] = table[i][j] + 1 if x == y else max(table[i][j + 1], table[i + 1][j])
    return table[-1][-1]


def _cmp(cid, a, b, **kw):
    return RoutingComparison(comparison_id=cid, prompt=kw.pop("prompt", "Say something."), response_a=a, response_b=b, **kw)


def test_it_computes_lcs_like_the_textbook_dynamic_programme():
    rng = np.random.default_rng(0)
    for _ in range(200):
        a = rng.choice(list("abcd"), size=rng.integers(0, 70)).tolist()
        b = rng.choice(list("abcd"), size=rng.integers(0, 70)).tolist()
        assert lcs_length(a, b) == _lcs_dp(a, b)


def test_it_scores_rouge_l_by_hand():
    # LCS("the cat sat on the mat", "the cat lay on a mat") = the cat on mat = 4; P = R = 4/6
    a, b = "the cat sat on the mat".split(), "the cat lay on a mat".split()
    assert rouge_l_f1(a, b) == pytest.approx(4 / 6)


def test_it_measures_lengths_and_overlap_of_each_pair():
    raw = extract_features([_cmp("c1", "one two three", "one two three four five six seven")])[0]
    assert (raw.len_shorter, raw.len_longer, raw.token_len_diff) == (3, 7, 4)
    assert raw.token_overlap == pytest.approx(3 / 7)
    assert raw.prompt_len == 3  # say, something, .


def test_it_merges_tagger_output_with_given_tags_and_counts_with_a_given_tokenizer():
    c = _cmp("c1", "a", "b", tags=["imported"], prompt="Prove that 2 is prime")
    raw = extract_features([c], tagger=lambda p: ["math"] if "Prove" in p else [], count_tokens=len)[0]
    assert raw.tags == ["imported", "math"]
    assert raw.prompt_len == len("Prove that 2 is prime")


def test_it_turns_judge_and_ensemble_signals_into_features():
    c = _cmp("c1", "x", "y", judge_position_disagreement=True, judge_confidence=0.2, reward_margins=[1.0, -1.0, 3.0])
    raw = extract_features([c])[0]
    assert raw.judge_position_disagreement is True
    assert raw.rm_disagreement == pytest.approx(np.std([1.0, -1.0, 3.0]))
    assert raw.rm_sign_disagreement is True
    assert extract_features([_cmp("c2", "x", "y", reward_margins=[1.0, 2.0])])[0].rm_sign_disagreement is False


def test_it_bins_continuous_features_into_terciles_fitted_on_the_pool():
    pool = [_cmp(f"c{i}", "w " * (i + 1), "w") for i in range(9)]  # token_len_diff = 0..8
    table = build_feature_table(extract_features(pool))
    diff_bin = {r.comparison_id: next(f for f in names if f.startswith("token_len_diff=")) for r, names in zip(table.raw, table.active)}
    assert [diff_bin[f"c{i}"] for i in range(9)] == ["token_len_diff=low"] * 3 + ["token_len_diff=mid"] * 3 + ["token_len_diff=high"] * 3
    assert table.counts()["token_len_diff=high"] == 3
    assert table.matrix().shape == (9, len(table.feature_names))


def test_it_reuses_fitted_bins_on_new_comparisons():
    pool = extract_features([_cmp(f"c{i}", "w " * (i + 1), "w") for i in range(9)])
    bins = fit_bins(pool)
    new = extract_features([_cmp("n1", "w " * 50, "w", judge_position_disagreement=True, tags=["unseen"])])[0]
    names = active_features(new, bins)
    assert "token_len_diff=high" in names
    assert "category=unseen" not in names  # tags outside the fitted pool get no column


def test_it_refuses_a_pool_with_duplicate_comparison_ids():
    raw = extract_features([_cmp("dup", "a", "b"), _cmp("dup", "c", "d")])
    with pytest.raises(UserError, match="'dup'"):
        build_feature_table(raw)


@pytest.fixture(scope="module")
def minilm():
    return lambda texts: embed_texts(texts, default_embedding_model(), batch_size=8)


def test_it_embeds_with_the_shipped_minilm_so_paraphrases_are_closer_than_unrelated_text(minilm):
    assert default_embedding_model().endswith("model")  # the local copy, not the hub id
    pairs = [
        _cmp("same", "A man is eating food.", "A man is eating a piece of bread."),
        _cmp("diff", "A man is eating food.", "The stock market fell sharply today."),
    ]
    emb_a, emb_b = embed_responses(pairs, minilm)
    assert emb_a.shape == (2, 384)
    assert np.allclose(np.linalg.norm(emb_a, axis=1), 1.0, atol=1e-5)
    raw = extract_features(pairs, embeddings=(emb_a, emb_b))
    assert raw[0].cosine_sim > 0.6 > 0.2 > raw[1].cosine_sim


def test_it_gives_the_same_embedding_alone_or_in_a_padded_batch(minilm):
    texts = ["short", "a much longer sentence about reward models and routing decisions"]
    together = minilm(texts)
    alone = minilm(texts[:1])
    assert np.allclose(together[0], alone[0], atol=1e-5)


def test_it_builds_the_same_features_a_chunk_at_a_time_as_on_the_whole_pool():
    from rlcore.routing.features import RoutingComparison, extract_features, extract_features_chunked

    rows = [RoutingComparison(comparison_id=str(i), prompt="q " * (i % 5), response_a="a b c " * (i % 4),
                              response_b="a x " * (i % 3 + 1), tags=["math"] if i % 2 else [],
                              judge_confidence=(i % 10) / 10) for i in range(23)]
    seen = []
    chunked = list(extract_features_chunked(iter(rows), chunk_size=5, on_chunk=lambda c, e: seen.append(len(c))))
    assert chunked == extract_features(rows)
    assert seen == [5, 5, 5, 5, 3]  # never more than a chunk held


def test_its_pair_vectors_are_the_hashed_word_difference_and_log_length_difference_by_hand():
    import hashlib

    import numpy as np

    from rlcore.routing.features import RoutingComparison, pair_vectors

    c = RoutingComparison(comparison_id="1", prompt="p", response_a="Cat cat dog", response_b="dog")

    def slot(word):  # the formula, written out: blake2b-4 little-endian mod 256
        return int.from_bytes(hashlib.blake2b(word.encode(), digest_size=4).digest(), "little") % 256

    a = np.zeros(256)
    a[slot("cat")] += 2
    a[slot("dog")] += 1
    b = np.zeros(256)
    b[slot("dog")] = 1
    expected = np.concatenate([a / np.sqrt(5) - b, [np.log(4) - np.log(2)]])
    assert np.allclose(pair_vectors([c])[0], expected)


def test_the_cli_plans_from_comparisons_as_from_its_own_feature_table(tmp_path):
    import json
    import subprocess
    import sys

    rows = [{"comparison_id": str(i), "prompt": "q " * (i % 5), "response_a": "a b " * (i % 4),
             "response_b": "a x " * (i % 3 + 1), "judge_position_disagreement": i % 3 == 0,
             "judge_confidence": (i % 10) / 10} for i in range(40)]
    path = tmp_path / "c.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))

    def rlcore(*argv):
        done = subprocess.run([sys.executable, "-m", "rlcore", "routing", *argv], cwd=tmp_path,
                              capture_output=True, text=True)
        assert done.returncode == 0, done.stderr
        return done

    rlcore("features", "c.jsonl", "-o", "f.json", "--no-embeddings", "--vectors", "v.npy", "--chunk-size", "7")
    rlcore("plan", "f.json", "--budget", "10", "--strategy", "uncertainty", "-o", "p1.json")
    rlcore("plan", "c.jsonl", "--comparisons", "--no-embeddings", "--chunk-size", "3", "--budget", "10",
           "--strategy", "uncertainty", "-o", "p2.json")
    rlcore("plan", "f.json", "--budget", "10", "--strategy", "uncertainty", "-o", "p3.json",
           "--decisions-output", "d.jsonl")
    one, two, three = (json.loads((tmp_path / n).read_text()) for n in ("p1.json", "p2.json", "p3.json"))
    assert one == two and one["n_human"] == 10
    streamed = [json.loads(line) for line in (tmp_path / "d.jsonl").read_text().splitlines()]
    assert streamed == one["reasons"] and (three["reasons"], three["human_ids"]) == ([], [])
    assert {k: v for k, v in three.items() if k not in ("reasons", "human_ids", "lm_ids")} == \
        {k: v for k, v in one.items() if k not in ("reasons", "human_ids", "lm_ids")}
    import numpy as np

    from rlcore.routing.cli import read_comparisons
    from rlcore.routing.features import pair_vectors

    assert np.allclose(np.load(tmp_path / "v.npy"), pair_vectors(read_comparisons(path)))
