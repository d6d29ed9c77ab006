"""score_rows and the reward-model component: totals, components, conditions, normalisations, batching."""

import json
import subprocess
import sys

import pytest

from rlcore.judges.deterministic import DeterministicJudge
from rlcore.rewards import RewardSpec, score_rows
from rlcore.rewards.engine import RewardEngine, make_batch


@pytest.fixture(scope="module")
def reward_model(tmp_path_factory):
    from rlcore.training.tiny_models import build_tiny_reward_model

    return build_tiny_reward_model(tmp_path_factory.mktemp("rm"))


def test_it_reports_the_total_and_every_component_per_row():
    spec = RewardSpec(name="s", components=[
        {"kind": "verifier", "name": "correct", "reference_column": "answer", "mode": "math", "weight": 2},
        {"kind": "rubric_judge", "name": "judged", "reference_column": "answer", "rubric": {"name": "r", "criteria": [
            {"name": "mentions", "description": "mentions the", "scale_min": 0, "scale_max": 10}]}},
    ])
    rows = [{"prompt": "1/2 + 1/4?", "completion": r"\boxed{3/4}", "answer": "0.75"},
            {"prompt": "1/2 + 1/4?", "completion": "mentions 1", "answer": "0.75"}]
    scored = score_rows(spec, rows, judge=DeterministicJudge())
    # the judge sees the description and the reference: keywords "mentions", "0", "75"; one of three is covered
    assert [s.components for s in scored] == [{"correct": 1.0, "judged": 0.0},
                                              {"correct": 0.0, "judged": pytest.approx(1 / 3)}]
    assert [s.total for s in scored] == [2.0, pytest.approx(1 / 3)]


def test_it_gives_none_where_a_condition_excludes_the_row_and_when_nothing_applies():
    spec = RewardSpec(name="s", components=[
        {"kind": "verifier", "name": "math", "reference_column": "answer", "when": {"column": "task", "equals": "math"}},
        {"kind": "rubric_rules", "name": "chat", "when": {"column": "task", "one_of": ["chat", "support"]},
         "rubric": {"name": "r", "criteria": [{"name": "polite", "rule": {"kind": "contains", "texts": ["thanks"]}}]}},
    ])
    scored = score_rows(spec, [
        {"prompt": "p", "completion": "4", "answer": "4", "task": "math"},
        {"prompt": "p", "completion": "thanks", "answer": None, "task": "support"},
        {"prompt": "p", "completion": "?", "task": "poetry"},
    ])
    assert [(s.total, s.components) for s in scored] == [
        (1.0, {"math": 1.0, "chat": None}), (1.0, {"math": None, "chat": 1.0}), (None, {"math": None, "chat": None})]


def test_it_groups_by_a_group_column_when_given():
    spec = RewardSpec(name="s", normalization="group_zscore", group_column="batch", components=[
        {"kind": "verifier", "name": "v", "reference_column": "answer", "mode": "exact"}])
    rows = [{"prompt": f"p{i}", "completion": c, "answer": "a", "batch": b}
            for i, (c, b) in enumerate([("a", 1), ("b", 1), ("a", 2), ("a", 2)])]
    totals = [s.total for s in score_rows(spec, rows)]
    assert totals[0] == pytest.approx(1.0, abs=1e-3) and totals[1] == pytest.approx(-1.0, abs=1e-3)
    assert totals[2:] == [0.0, 0.0]


def test_it_scores_with_a_reward_model_the_same_in_any_batch_size(reward_model):
    rows = [{"prompt": "w1 w2", "completion": " w3" * n} for n in range(1, 8)]

    def scores(batch_size):
        spec = RewardSpec(name="s", components=[
            {"kind": "reward_model", "name": "rm", "path": str(reward_model), "batch_size": batch_size, "device": "cpu"}])
        return [s.components["rm"] for s in score_rows(spec, rows)]

    one, three = scores(1), scores(3)
    assert all(isinstance(v, float) for v in one) and len(set(one)) > 1
    assert three == pytest.approx(one, abs=1e-4)


def test_it_applies_the_chat_template_to_conversational_rows_for_the_reward_model(reward_model):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer
    import torch

    spec = RewardSpec(name="s", components=[{"kind": "reward_model", "name": "rm", "path": str(reward_model),
                                             "device": "cpu"}])
    prompt = [{"role": "user", "content": "w1 w2"}]
    completion = [{"role": "assistant", "content": "w3 thanks"}]
    [scored] = RewardEngine(spec).score_batch(make_batch([prompt], [completion]))
    tokenizer = AutoTokenizer.from_pretrained(reward_model)
    model = AutoModelForSequenceClassification.from_pretrained(reward_model).eval()
    text = tokenizer.apply_chat_template(prompt + completion, tokenize=False)
    with torch.no_grad():
        expected = model(**tokenizer([text], return_tensors="pt")).logits[0, 0].item()
    assert scored.components["rm"] == pytest.approx(expected, abs=1e-4)


def test_it_loads_the_reward_model_only_when_it_first_scores(reward_model):
    spec = RewardSpec(name="s", components=[{"kind": "reward_model", "name": "rm", "path": str(reward_model)}])
    code = ("import sys; from rlcore.rewards import RewardSpec; from rlcore.rewards.trl_adapter import "
            f"build_reward_funcs; build_reward_funcs(RewardSpec.model_validate_json({spec.model_dump_json()!r})); "
            "print('torch' in sys.modules, 'transformers' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "False"]


def test_it_prints_rows_and_explains_problems_from_the_command_line(tmp_path):
    spec = tmp_path / "spec.yaml"
    spec.write_text("name: s\ncomponents:\n  - {kind: verifier, name: correct, reference_column: answer}\n"
                    "  - {kind: length_penalty, name: overlong, max_length: 4, cache_length: 1, unit: words, weight: 0.5}\n")
    rows = tmp_path / "rows.jsonl"
    rows.write_text(json.dumps({"prompt": "2+2", "completion": "it is 4", "answer": "4"}) + "\n"
                    + json.dumps({"prompt": "2+2", "completion": "it is 5", "answer": "4"}) + "\n")
    run = subprocess.run([sys.executable, "-m", "rlcore", "reward", "score", "--spec", str(spec), "--input", str(rows)],
                         capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    lines = [json.loads(line) for line in run.stdout.splitlines()]
    assert [(r["total"], r["components"]) for r in lines] == [
        (1.0, {"correct": 1.0, "overlong": 0.0}), (0.0, {"correct": 0.0, "overlong": 0.0})]

    check = subprocess.run([sys.executable, "-m", "rlcore", "reward", "check", "--spec", str(spec),
                            "--columns", "prompt,gold"], capture_output=True, text=True)
    assert check.returncode == 2
    assert check.stdout.strip() == (f"{spec}: component 'correct', field 'components[0].reference_column': "
                                    "column 'answer' is not in the dataset (columns: gold, prompt)")
    ok = subprocess.run([sys.executable, "-m", "rlcore", "reward", "check", "--spec", str(spec)],
                        capture_output=True, text=True)
    assert ok.returncode == 0 and "ok (2 components" in ok.stdout

    rows.write_text('{"prompt": "x"}\nnot json\n')
    bad = subprocess.run([sys.executable, "-m", "rlcore", "reward", "score", "--spec", str(spec), "--input", str(rows)],
                         capture_output=True, text=True)
    assert bad.returncode == 2 and f"{rows}:2: not valid JSON" in bad.stderr
