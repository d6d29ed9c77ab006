"""The process_reward_model component: step scores from a trained PRM, aggregated (min, mean, last, product),
renormalised with an outcome, checked against hand computations and an independent forward pass; in a GRPO
run its rewards/<name>/mean is logged."""

import json
import math
from pathlib import Path

import pytest

from rlcore.errors import UserError
from rlcore.rewards import RewardSpec, check_spec, score_rows
from rlcore.rewards.process import aggregate, renorm
from rlcore.training import tiny_models
from step_data import synthetic_steps


@pytest.fixture(scope="module")
def prm(tmp_path_factory):
    from rlcore.training.prm import train_prm
    from rlcore.training.specs import PRMTrainSpec

    root = tmp_path_factory.mktemp("prm")
    backbone = tiny_models.build_tiny_causal_lm(root / "backbone")
    snapshot = root / "steps.jsonl"
    snapshot.write_text("".join(json.dumps(r) + "\n" for r in synthetic_steps(160)))
    spec = PRMTrainSpec(output_dir=root / "run", backbone=str(backbone), step_snapshot=snapshot, max_steps=100,
                        learning_rate=3e-3, per_device_train_batch_size=16, max_length=128, save_steps=1000,
                        logging_steps=50, seed=1)
    assert train_prm(spec) == 0
    return root / "run" / "model"


def test_aggregations_match_the_hand_computed_values():
    scores = [0.9, 0.6, 0.3, 0.8]
    assert aggregate(scores, "min") == 0.3
    assert aggregate(scores, "mean") == pytest.approx((0.9 + 0.6 + 0.3 + 0.8) / 4)
    assert aggregate(scores, "last") == 0.8
    assert aggregate(scores, "product") == pytest.approx(0.9 * 0.6 * 0.3 * 0.8)
    assert aggregate([], "min") is None


def test_renorm_keeps_a_right_outcome_above_any_wrong_one():
    # o + p - 1: right answers land in [0, 1], wrong ones in [-1, 0]
    assert renorm(1.0, 0.2) == pytest.approx(0.2) and renorm(0.0, 0.9) == pytest.approx(-0.1)
    assert renorm(1.0, 0.0) >= renorm(0.0, 1.0)
    assert renorm(None, 0.4) is None and renorm(1.0, None) is None


def _independent_step_scores(model_dir: Path, prompt: str, steps: list[str]) -> list[float]:
    """P(good) after each step, from a plain transformers forward pass over the text joined by hand."""
    import torch
    from transformers import AutoModelForTokenClassification, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForTokenClassification.from_pretrained(model_dir).eval()
    ids, ends = tok(prompt, add_special_tokens=False)["input_ids"], []
    for step in steps:
        ids += tok(step, add_special_tokens=False)["input_ids"] + tok("\n", add_special_tokens=False)["input_ids"]
        ends.append(len(ids) - 1)
    with torch.no_grad():
        probs = model(input_ids=torch.tensor([ids])).logits.softmax(-1)[0, :, 1]
    return [float(probs[e]) for e in ends]


def test_it_scores_each_step_aggregates_and_renormalises_with_the_verifier(prm):
    rows = [{"prompt": "question 3", "completion": "w1 w2 w3\nw4 w5 w6\nThe answer is yes", "reference": "yes"},
            {"prompt": "question 3", "completion": "w1 w2 w3\nw4 sorry w6\nThe answer is yes", "reference": "yes"},
            {"prompt": "question 3", "completion": "w7 w8 w9\nThe answer is no", "reference": "yes"}]
    components = [{"kind": "verifier", "name": "correct", "reference_column": "reference", "mode": "exact",
                   "weight": 0.0}]
    for how in ("min", "mean", "last", "product"):
        components.append({"kind": "process_reward_model", "name": f"steps_{how}", "path": str(prm),
                           "aggregation": how, "weight": 0.0})
    components.append({"kind": "process_reward_model", "name": "ppr", "path": str(prm), "aggregation": "mean",
                       "combine": "renorm", "outcome_component": "correct", "weight": 1.0})
    scored = score_rows(RewardSpec(name="process", components=components), rows)
    for row, result in zip(rows, scored):
        steps = row["completion"].split("\n")
        s = _independent_step_scores(prm, row["prompt"], steps)
        assert result.components["steps_min"] == pytest.approx(min(s), abs=1e-5)
        assert result.components["steps_mean"] == pytest.approx(sum(s) / len(s), abs=1e-5)
        assert result.components["steps_last"] == pytest.approx(s[-1], abs=1e-5)
        assert result.components["steps_product"] == pytest.approx(math.prod(s), abs=1e-5)
        outcome = 1.0 if row["completion"].endswith(row["reference"]) else 0.0
        assert result.components["ppr"] == pytest.approx(outcome + sum(s) / len(s) - 1, abs=1e-5)
        assert result.total == pytest.approx(result.components["ppr"], abs=1e-6)
    # the trained PRM ranks the clean chain above the one with a bad step
    assert scored[0].components["steps_min"] > 0.5 > scored[1].components["steps_min"]
    assert scored[2].components["ppr"] < 0 <= scored[0].components["ppr"]


def test_a_completion_outside_the_split_bounds_gets_no_process_reward(prm):
    spec = RewardSpec(name="p", components=[{"kind": "process_reward_model", "name": "steps", "path": str(prm),
                                             "split": {"kind": "newline", "min_steps": 2}}])
    [one_line] = score_rows(spec, [{"prompt": "q", "completion": "only one step"}])
    assert one_line.components["steps"] is None and one_line.total is None


def test_the_spec_check_names_the_field_to_fix(tmp_path, prm):
    rm = tiny_models.build_tiny_reward_model(tmp_path / "rm")
    spec = RewardSpec(name="p", components=[
        {"kind": "verifier", "name": "correct", "reference_column": "reference"},
        {"kind": "process_reward_model", "name": "a", "path": str(rm)},
        {"kind": "process_reward_model", "name": "b", "path": str(prm), "combine": "renorm"},
        {"kind": "process_reward_model", "name": "c", "path": str(prm), "outcome_component": "correct"},
        {"kind": "process_reward_model", "name": "d"}])
    problems = {(p.field, p.message.split(";")[0][:40]) for p in check_spec(spec)}
    fields = {f for f, _ in problems}
    assert {"components[1].path", "components[2].outcome_component", "components[3].outcome_component",
            "components[4].path"} <= fields
    assert any("not a token-classification" in m for f, m in problems if f == "components[1].path") or \
        any("not a token-classification" in p.message for p in check_spec(spec))
    with pytest.raises(UserError, match="grades steps with an LM judge; pass a judge"):
        score_rows(RewardSpec(name="j", components=[{"kind": "process_reward_model", "name": "j",
                                                     "scorer": "judge"}]), [{"prompt": "q", "completion": "a\nb"}])


def test_a_grpo_run_logs_the_process_component(tmp_path, prm, capsys):
    from rlcore.events import parse_line
    from rlcore.training.grpo import train_grpo
    from rlcore.training.specs import GRPOTrainSpec

    policy = tiny_models.build_tiny_causal_lm(tmp_path / "policy")
    prompts = tiny_models.write_prompts(tmp_path / "prompts.jsonl", 8)
    reward_spec = {"name": "outcome-and-process", "components": [
        {"kind": "verifier", "name": "agrees", "reference_column": "reference", "mode": "exact", "weight": 1.0},
        {"kind": "process_reward_model", "name": "steps", "path": str(prm), "aggregation": "min", "weight": 0.5,
         "split": {"kind": "regex", "pattern": r"\s+", "min_steps": 1}}]}
    spec = GRPOTrainSpec(output_dir=tmp_path / "run", policy=str(policy), prompt_snapshot=prompts,
                         reward_spec=reward_spec, preset="grpo", max_steps=2, per_device_train_batch_size=8,
                         num_generations=4, max_completion_length=8, sample_every=1, samples_per_report=2,
                         save_steps=100, learning_rate=1e-4)
    assert train_grpo(spec) == 0
    events = [e for e in map(parse_line, capsys.readouterr().out.splitlines()) if e]
    process = [e["value"] for e in events if e["kind"] == "metric" and e["name"] == "rewards/steps/mean"]
    assert len(process) == 2 and all(0.0 <= v <= 1.0 for v in process)
    samples = [e for e in events if e["kind"] == "sample"]
    assert samples and all(set(s["rewards"]) == {"agrees", "steps"} for s in samples)
