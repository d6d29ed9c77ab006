"""Process reward model training: token classification at step separators on a learnable step set,
held out by response, saved as a plain token classifier; bad input refused with row and field."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from rlcore.training import tiny_models
from step_data import synthetic_steps
from rlcore.errors import UserError
from rlcore.events import parse_line
from rlcore.steps import StepwiseRow
from rlcore.training.prm import first_error, separator_ids, step_metrics, tokenize_row, train_prm
from rlcore.training.specs import PRMTrainSpec

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def backbone(tmp_path_factory):
    return tiny_models.build_tiny_causal_lm(tmp_path_factory.mktemp("tiny-prm"))


def _write(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_it_puts_each_label_on_the_separator_after_its_step_and_ignores_the_rest(backbone):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(backbone)
    sep, _ = separator_ids(tok, "\n", add=False, backbone=str(backbone))
    row = StepwiseRow("hi", ["yes no", "thanks"], [True, False])
    encoded = tokenize_row(row, tok, sep)
    p = tok("hi", add_special_tokens=False)["input_ids"]
    s1 = tok("yes no", add_special_tokens=False)["input_ids"]
    s2 = tok("thanks", add_special_tokens=False)["input_ids"]
    assert encoded["input_ids"] == p + s1 + sep + s2 + sep
    expected = [-100] * len(p) + [-100] * (len(s1) + len(sep) - 1) + [1] + [-100] * (len(s2) + len(sep) - 1) + [0]
    assert encoded["labels"] == expected
    # only the last step's label with train_on_last_step_only
    assert [x for x in tokenize_row(row, tok, sep, True)["labels"] if x != -100] == [0]


def test_it_counts_steps_and_first_errors_by_hand():
    predicted = [[True, True, False], [True, False], [True, True]]
    truth = [[True, False, False], [True, False], [True, True]]
    m = step_metrics(predicted, truth)
    assert m["step_accuracy"] == pytest.approx(6 / 7) and m["n_steps"] == 7
    assert m["first_error_accuracy"] == pytest.approx(2 / 3) and m["n_responses"] == 3
    assert first_error([True, False, True]) == 1 and first_error([True]) is None
    low, high = m["first_error_accuracy_interval"]
    assert low < 2 / 3 < high


def test_it_learns_the_first_error_on_held_out_responses_and_saves_a_plain_token_classifier(
        tmp_path, backbone, capsys):
    snapshot = _write(tmp_path / "steps.jsonl", synthetic_steps(240))
    spec = PRMTrainSpec(output_dir=tmp_path / "run", backbone=str(backbone), step_snapshot=snapshot,
                        max_steps=150, learning_rate=3e-3, per_device_train_batch_size=16, max_length=128,
                        eval_fraction=0.2, save_steps=1000, logging_steps=25, seed=1)
    assert train_prm(spec) == 0
    events = [e for e in map(parse_line, capsys.readouterr().out.splitlines()) if e]
    [artifact] = [e for e in events if e["kind"] == "artifact"]
    assert artifact["type"] == "process_reward_model"
    metrics = artifact["metrics"]
    assert metrics["n_responses"] == 48 and metrics["n_steps"] > 100
    assert metrics["first_error_accuracy"] > 0.85, metrics
    assert metrics["step_accuracy"] > 0.9, metrics
    assert artifact["data"]["split"]["by"] == "response"
    assert {"loss", "eval_first_error_accuracy", "eval_step_accuracy"} <= {e["name"] for e in events
                                                                           if e["kind"] == "metric"}

    import torch
    from transformers import AutoModelForTokenClassification, AutoTokenizer

    model_dir = tmp_path / "run" / "model"
    model = AutoModelForTokenClassification.from_pretrained(model_dir).eval()
    tok = AutoTokenizer.from_pretrained(model_dir)
    assert model.config.id2label == {0: "bad", 1: "good"}
    good = tok("question 1" + "w1 w2 w3\nw4 w5 w6\n", return_tensors="pt")
    bad = tok("question 1" + "w1 w2 w3\nw4 sorry w6\n", return_tensors="pt")
    with torch.no_grad():
        p_good = model(**good).logits.softmax(-1)[0, -1, 1]
        p_bad = model(**bad).logits.softmax(-1)[0, -1, 1]
    assert p_good > 0.5 > p_bad


def test_it_refuses_a_separator_the_tokenizer_lacks_unless_asked_to_add_it(tmp_path):
    from transformers import AutoTokenizer

    directory = tiny_models.minilm_path()  # a WordPiece vocabulary: no token for a tab-bullet separator
    tok = AutoTokenizer.from_pretrained(directory)
    with pytest.raises(UserError, match=r"step_separator: the tokenizer of .* has no token for '\\n'"):
        separator_ids(tok, "\n", add=False, backbone=str(directory))
    ids, added = separator_ids(tok, "<step>", add=True, backbone=str(directory))
    assert added and len(ids) == 1 and tok.decode(ids) == "<step>"


def test_it_refuses_a_step_longer_than_the_context_naming_row_and_field(tmp_path, backbone):
    rows = synthetic_steps(20)
    rows[0]["completions"][1] = " ".join(["thanks"] * 200)
    spec = PRMTrainSpec(output_dir=tmp_path / "run", backbone=str(backbone), max_length=64,
                        step_snapshot=_write(tmp_path / "s.jsonl", rows), eval_fraction=0.5, seed=0)
    with pytest.raises(UserError, match=r"row \d+ \(prompt 'question 0'\), field 'completions': step 2 is \d+ tokens, "
                                        r"longer than max_length=64"):
        train_prm(spec)
    assert not (tmp_path / "run" / "model").exists()


def test_it_refuses_labels_that_do_not_match_the_steps_with_file_and_line(tmp_path, backbone):
    rows = synthetic_steps(20)
    rows[6]["labels"] = rows[6]["labels"] + [True]
    path = _write(tmp_path / "s.jsonl", rows)
    spec = PRMTrainSpec(output_dir=tmp_path / "run", backbone=str(backbone), step_snapshot=path)
    with pytest.raises(UserError, match=rf"{path}:7, field 'labels': \d labels for \d steps"):
        train_prm(spec)


def test_the_cli_trains_from_a_yaml_spec(tmp_path, backbone):
    snapshot = _write(tmp_path / "steps.jsonl", synthetic_steps(30))
    (tmp_path / "spec.yaml").write_text(f"kind: prm\noutput_dir: {tmp_path / 'run'}\nbackbone: {backbone}\n"
                                        f"step_snapshot: {snapshot}\nmax_steps: 2\nmax_length: 96\n")
    done = subprocess.run([sys.executable, "-m", "rlcore", "train", "prm", str(tmp_path / "spec.yaml")],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert (tmp_path / "run" / "model" / "rlcore_prm.json").is_file()
    (tmp_path / "bad.yaml").write_text(f"kind: prm\noutput_dir: {tmp_path / 'r2'}\nbackbone: {backbone}\n"
                                       f"step_snapshot: {snapshot}\nstep_separator: ''\n")
    done = subprocess.run([sys.executable, "-m", "rlcore", "train", "prm", str(tmp_path / "bad.yaml")],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 2 and "step_separator" in done.stderr
