"""The TRL adapter: the exact call TRL makes, per-component names, None where a component does not
apply, combined normalisations, and a real GRPO step that logs rewards/<component>/mean."""

import math
import pickle

import pytest

from rlcore.errors import UserError
from rlcore.judges.deterministic import DeterministicJudge
from rlcore.rewards import RewardSpec, score_rows
from rlcore.rewards.trl_adapter import build_reward_funcs

RUBRIC = {"name": "fmt", "criteria": [
    {"name": "tagged", "rule": {"kind": "format", "check": "answer_tags"}},
    {"name": "no_urls", "rule": {"kind": "format", "check": "no_urls"}, "critical": True},
]}


def mixed_spec(normalization="none", **extra) -> RewardSpec:
    return RewardSpec(name="mixed", normalization=normalization, **extra, components=[
        {"kind": "rubric_rules", "name": "format", "rubric": RUBRIC, "weight": 0.5},
        {"kind": "verifier", "name": "correct", "reference_column": "answer", "mode": "numeric",
         "when": {"column": "task", "equals": "math"}},
        {"kind": "length_penalty", "name": "overlong", "max_length": 6, "cache_length": 2, "weight": 1.0},
    ])


def trl_call(func, prompts, completions, **columns):
    """Call a reward function exactly as GRPOTrainer._calculate_rewards does."""
    ids = [list(range(len(completion_text.split()))) if isinstance(completion_text, str) else [0, 0]
           for completion_text in completions]
    return func(prompts=prompts, completions=completions, completion_ids=ids, trainer_state=object(),
                log_extra=lambda *a, **k: None, log_metric=lambda *a, **k: None, **columns)


PROMPTS = ["2+2?", "2+2?", "hello", "hello"]
COMPLETIONS = ["<answer>4</answer>", "it is 5, see https://x.org", "<answer>hi there friend</answer>", "hi"]
COLUMNS = {"answer": ["4", "4", None, None], "task": ["math", "math", "chat", "chat"]}


def test_it_returns_one_named_function_per_component_with_its_weight():
    funcs, weights = build_reward_funcs(mixed_spec())
    assert [f.__name__ for f in funcs] == ["format", "correct", "overlong"]
    assert weights == [0.5, 1.0, 1.0]
    outputs = [trl_call(f, PROMPTS, COMPLETIONS, **COLUMNS) for f in funcs]
    assert outputs[0] == [1.0, 0.0, 1.0, 0.5]  # the URL fails a critical criterion: capped at 0
    assert outputs[1] == [1.0, 0.0, None, None]  # the verifier does not apply to chat rows
    assert outputs[2] == [0.0, -0.5, 0.0, 0.0]  # token counts come from completion_ids


def test_it_sums_like_trl_to_the_same_total_as_score_rows():
    funcs, weights = build_reward_funcs(mixed_spec())
    outputs = [trl_call(f, PROMPTS, COMPLETIONS, **COLUMNS) for f in funcs]
    trl_total = [sum(w * v for w, v in zip(weights, col) if v is not None) for col in zip(*outputs)]
    rows = [{"prompt": p, "completion": c, "completion_ids": list(range(len(c.split()))),
             "answer": a, "task": t} for p, c, a, t in zip(PROMPTS, COMPLETIONS, COLUMNS["answer"], COLUMNS["task"])]
    assert [r.total for r in score_rows(mixed_spec(), rows)] == trl_total


def test_it_scores_conversational_completions_by_their_assistant_text():
    funcs, _ = build_reward_funcs(mixed_spec())
    prompts = [[{"role": "user", "content": "2+2?"}]] * 2
    completions = [[{"role": "assistant", "content": "<answer>4</answer>"}],
                   [{"role": "assistant", "content": [{"type": "text", "text": "<answer>5</answer>"}]}]]
    assert trl_call(funcs[1], prompts, completions, answer=["4", "4"], task=["math", "math"]) == [1.0, 0.0]
    assert trl_call(funcs[0], prompts, completions, answer=["4", "4"], task=["math", "math"]) == [1.0, 1.0]


@pytest.mark.parametrize("normalization", ["group_zscore"])  # normalize_then_sum is TRL's: test_reward_normalisation
def test_it_puts_group_normalisations_in_one_total_with_zero_weight_metrics(normalization):
    funcs, weights = build_reward_funcs(mixed_spec(normalization))
    assert [f.__name__ for f in funcs] == ["total", "format", "correct", "overlong"]
    assert weights == [1.0, 0.0, 0.0, 0.0]
    total = trl_call(funcs[0], PROMPTS, COMPLETIONS, **COLUMNS)
    # each prompt group of two has mean zero and opposite signs
    assert total[0] == pytest.approx(-total[1]) and total[0] > 0.9
    assert total[2] == pytest.approx(-total[3]) and total[2] > 0.4
    assert trl_call(funcs[2], PROMPTS, COMPLETIONS, **COLUMNS) == [1.0, 0.0, None, None]


def test_it_computes_each_component_once_per_batch_in_combined_mode():
    class CountingJudge(DeterministicJudge):
        calls = 0

        def grade(self, requests):
            CountingJudge.calls += 1
            return super().grade(requests)

    spec = RewardSpec(name="j", normalization="group_zscore", components=[
        {"kind": "rubric_judge", "name": "judged",
         "rubric": {"name": "r", "criteria": [{"name": "topic", "description": "cats dogs"}]}}])
    funcs, _ = build_reward_funcs(spec, judge=CountingJudge())
    prompts, completions = ["p", "p"], ["cats", "cats and dogs"]
    total = trl_call(funcs[0], prompts, completions)
    judged = trl_call(funcs[1], prompts, completions)
    assert CountingJudge.calls == 1
    assert judged == [0.5, 1.0] and total[0] < 0 < total[1]
    trl_call(funcs[1], list(prompts), list(completions))  # a new batch is computed afresh
    assert CountingJudge.calls == 2


def test_it_centres_par_on_the_reference_response():
    spec = RewardSpec(name="par", normalization="par", par_reference_column="reference", components=[
        {"kind": "rubric_rules", "name": "format", "rubric": RUBRIC}])
    [total, fmt] = build_reward_funcs(spec)[0]
    values = trl_call(total, ["q", "q", "q"], ["<answer>1</answer>", "1", "<answer>2</answer>"],
                      reference=["<answer>0</answer>", "<answer>0</answer>", None])
    assert values[0] == pytest.approx(0.5)  # as good as the reference
    assert values[1] == pytest.approx(1 / (1 + math.exp(0.5)))  # half a point worse (no tags)
    assert values[2] is None  # no reference response on that row


def test_it_refuses_a_judged_rubric_without_a_judge():
    spec = RewardSpec(name="j", components=[
        {"kind": "rubric_judge", "name": "judged", "rubric": {"name": "r", "criteria": [{"name": "tone"}]}}])
    with pytest.raises(UserError, match="component 'judged' grades criteria with an LM judge"):
        build_reward_funcs(spec)


def test_it_refuses_an_invalid_spec_before_training():
    spec = RewardSpec(name="bad", components=[{"kind": "rubric_rules", "name": "r", "rubric": {
        "name": "r", "criteria": [{"name": "c", "rule": {"kind": "regex", "pattern": "(?=x)"}}]}}])
    with pytest.raises(UserError, match=r"criterion 'c', field 'components\[0\].rubric.criteria\[0\].rule.pattern'"):
        build_reward_funcs(spec)


def test_it_survives_pickling_for_worker_processes():
    funcs, _ = build_reward_funcs(mixed_spec("group_zscore"))
    copies = pickle.loads(pickle.dumps(funcs))
    assert [f.__name__ for f in copies] == [f.__name__ for f in funcs]
    assert trl_call(copies[0], PROMPTS, COMPLETIONS, **COLUMNS) == trl_call(funcs[0], PROMPTS, COMPLETIONS, **COLUMNS)


def test_it_logs_each_component_under_its_name_in_a_real_grpo_step(tmp_path):
    from datasets import Dataset
    from transformers import AutoTokenizer, TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    from rlcore.training.tiny_models import build_tiny_causal_lm

    policy = build_tiny_causal_lm(tmp_path / "policy")
    rows = [{"prompt": f"w{i} w{i + 1} question", "answer": str(i), "task": "math" if i % 2 else "chat"}
            for i in range(8)]
    funcs, weights = build_reward_funcs(mixed_spec())
    logs = []

    class Keep(TrainerCallback):
        def on_log(self, args, state, control, logs_=None, **kwargs):
            logs.append(dict(kwargs.get("logs") or logs_ or {}))

    config = GRPOConfig(output_dir=str(tmp_path / "out"), max_steps=1, per_device_train_batch_size=4,
                        num_generations=4, max_completion_length=8, logging_steps=1, report_to="none",
                        reward_weights=weights, use_cpu=True, disable_tqdm=True, save_strategy="no")
    trainer = GRPOTrainer(model=str(policy), reward_funcs=funcs, args=config, train_dataset=Dataset.from_list(rows),
                          processing_class=AutoTokenizer.from_pretrained(policy), callbacks=[Keep()])
    trainer.train()
    logged = {k: v for entry in logs for k, v in entry.items()}
    for name in ("format", "correct", "overlong"):
        assert f"rewards/{name}/mean" in logged
    # a random policy writes neither answer tags nor URLs: half the rubric
    assert float(logged["rewards/format/mean"]) == pytest.approx(0.5)
    assert float(logged["rewards/overlong/mean"]) <= 0.0
    correct = logged["rewards/correct/mean"]  # None (NaN) when every prompt drawn was a chat prompt
    assert correct is None or math.isnan(float(correct)) or 0.0 <= float(correct) <= 1.0


def test_it_checks_a_spec_unless_its_caller_did_where_the_spec_entered():
    zero = RewardSpec(name="s", components=[
        {"kind": "length_penalty", "name": "long", "max_length": 8, "cache_length": 4, "weight": 0}])
    with pytest.raises(UserError, match="all weights are zero"):
        build_reward_funcs(zero)
    assert build_reward_funcs(zero, checked=True)[1] == [0.0]  # e.g. the part of a checked spec a preview scores
