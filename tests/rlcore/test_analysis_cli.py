"""``python -m rlcore analysis ...`` run as a real process on files, as a user would."""

import json
import subprocess
import sys

import pytest


def run(*args):
    return subprocess.run([sys.executable, "-m", "rlcore", "analysis", *args], capture_output=True, text=True,
                          timeout=120)


def write(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.fixture
def files(tmp_path):
    a = [{"prompt_id": p, "response_id": y, "score": s} for p, y, s in
         [("p", "y1", 2), ("p", "y2", 0), ("q", "y1", 1), ("q", "y2", 1), ("q", "y3", 4)]]
    b = [dict(r, score=10 * r["score"] + (5 if r["prompt_id"] == "q" else 0)) for r in a]
    c = [dict(r, score=-r["score"]) for r in a]
    labels = [{"prompt_id": "p", "chosen_id": "y1", "rejected_id": "y2", "label_id": "1", "comparison_id": "c1",
               "annotator": "ann", "choice": "a"},
              {"prompt_id": "q", "chosen_id": "y3", "rejected_id": "y1", "label_id": "2", "comparison_id": "c2",
               "annotator": "bob", "choice": "b"}]
    return {"a": write(tmp_path / "a.jsonl", a), "b": write(tmp_path / "b.jsonl", b),
            "c": write(tmp_path / "c.jsonl", c), "short": write(tmp_path / "short.jsonl", a[:4]),
            "labels": write(tmp_path / "labels.jsonl", labels), "dir": tmp_path}


def test_starc_prints_the_matrix_correlations_agreement_and_drill_down_as_json(files):
    done = run("starc", f"rm={files['a']}", f"scaled={files['b']}", f"flipped={files['c']}", "--labels",
               str(files["labels"]), "--drill", "rm,flipped", "--top", "2")
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    assert out["starc"]["sources"] == ["rm", "scaled", "flipped"]
    assert out["starc"]["distances"][0][1] == 0.0 and out["starc"]["distances"][0][2] == pytest.approx(2.0)
    assert [x["accuracy"] for x in out["label_agreement"]] == [1.0, 1.0, 0.0]
    assert out["label_agreement"][0]["n_pairs"] == 2
    assert len(out["drill_down"]["pairs"]) == 2 and out["drill_down"]["n_discordant"] == 3


def test_starc_exits_2_naming_the_source_scored_on_a_different_response_set(files):
    done = run("starc", f"rm={files['a']}", f"partial={files['short']}")
    assert done.returncode == 2
    assert "source 'partial' has no score for 1 of the 5 responses" in done.stderr
    assert "prompt 'q', response 'y3'" in done.stderr


def test_audit_and_raters_and_evaluate_refuse_what_they_cannot_compute(files):
    done = run("audit", "--labels", str(files["labels"]), f"only={files['a']}")
    assert done.returncode == 2 and "at least 2 members; got 1 ('only')" in done.stderr
    gold = write(files["dir"] / "gold.jsonl", [{"comparison_id": "c1", "answer": "tie"}])
    done = run("raters", "--labels", str(files["labels"]), "--gold", str(gold))
    assert done.returncode == 2 and "gold.jsonl:1: gold item 'c1' has answer 'tie'" in done.stderr
    done = run("evaluate", "--scores", f"rm={files['a']}", "--labels", str(files["labels"]))
    assert done.returncode == 2 and "2 decisive held-out labelled pairs" in done.stderr


def test_audit_and_raters_print_json(files):
    done = run("audit", "--labels", str(files["labels"]), f"rm={files['a']}", f"flipped={files['c']}")
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    assert out["n_members"] == 2 and out["n_pairs"] == 2 and out["n_ambiguous"] == 2  # members cancel out
    gold = write(files["dir"] / "gold.jsonl", [{"comparison_id": "c1", "answer": "a"}])
    done = run("raters", "--labels", str(files["labels"]), "--gold", str(gold))
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    assert out["dawid_skene"]["n_labels"] == 2
    assert out["gold"]["raters"][0] == {"rater": "ann", "n_gold_labels": 1, "n_correct": 1, "n_tie_answers": 0,
                                        "accuracy": 1.0, "ci_low": pytest.approx(0.2065, abs=1e-4), "ci_high": 1.0}


def test_a_bad_score_row_names_the_file_line_and_field(files):
    bad = files["dir"] / "bad.jsonl"
    bad.write_text('{"prompt_id": "p", "response_id": "y1", "score": 1}\n{"prompt_id": "p", "response_id": "y2", "score": "high"}\n')
    done = run("starc", str(files["a"]), str(bad))
    assert done.returncode == 2 and "bad.jsonl:2: field 'score': expected a finite number, got 'high'" in done.stderr
