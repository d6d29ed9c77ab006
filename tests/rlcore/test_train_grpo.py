"""GRPO training through TRL's GRPOTrainer on a tiny random Qwen2-shaped policy."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from rlcore.errors import UserError
from rlcore.events import parse_line
from rlcore.training.grpo import train_grpo
from rlcore.training.specs import GRPOTrainSpec
from rlcore.training.tiny_models import SHORT_YES_SPEC as REWARD_SPEC

ROOT = Path(__file__).resolve().parents[2]


def _spec(tmp_path, policy, prompts, **overrides) -> GRPOTrainSpec:
    fields = dict(output_dir=tmp_path / "run", policy=str(policy), prompt_snapshot=prompts, reward_spec=REWARD_SPEC,
                  preset="grpo", max_steps=2, per_device_train_batch_size=8, num_generations=4,
                  max_completion_length=8, sample_every=1, samples_per_report=3, save_steps=100, learning_rate=1e-4)
    fields.update(overrides)
    return GRPOTrainSpec(**fields)


def test_it_logs_rewards_per_component_and_writes_samples_via_the_cli(tmp_path, policy, prompts):
    spec_path = tmp_path / "grpo.json"
    spec_path.write_text(_spec(tmp_path, policy, prompts).model_dump_json())
    done = subprocess.run([sys.executable, "-m", "rlcore", "train", "grpo", str(spec_path)], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    events = [e for e in map(parse_line, done.stdout.splitlines()) if e]

    names = {e["name"] for e in events if e["kind"] == "metric"}
    assert {"loss", "reward", "reward_std", "frac_reward_zero_std", "rewards/agrees/mean", "rewards/overlong/mean",
            "kl", "entropy", "completions/mean_length", "clip_ratio/region_mean"} <= names
    samples = [e for e in events if e["kind"] == "sample"]
    assert [s["step"] for s in samples] == [1, 1, 1, 2, 2, 2]
    for s in samples:
        assert set(s["rewards"]) == {"agrees", "overlong"}
        assert s["reward"] == pytest.approx(s["rewards"]["agrees"] + 0.5 * s["rewards"]["overlong"])
        assert isinstance(s["advantage"], float) and isinstance(s["completion"], str)
    on_disk = [json.loads(line) for line in (tmp_path / "run" / "samples.jsonl").read_text().splitlines()]
    assert on_disk == samples
    [artifact] = [e for e in events if e["kind"] == "artifact"]
    assert artifact["type"] == "policy" and "reward" in artifact["metrics"]

    from transformers import AutoModelForCausalLM

    assert AutoModelForCausalLM.from_pretrained(tmp_path / "run" / "model").config.model_type == "qwen2"


def test_it_trains_lora_adapters_and_saves_a_merged_model(tmp_path, policy, prompts, capsys):
    spec = _spec(tmp_path, policy, prompts, preset="dr_grpo", max_steps=1,
                 lora={"r": 4, "alpha": 8, "target_modules": ["q_proj", "v_proj"]})
    assert train_grpo(spec) == 0
    model_dir = tmp_path / "run" / "model"
    assert (model_dir / "config.json").is_file() and not (model_dir / "adapter_config.json").exists()
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(model_dir)
    assert not any("lora" in name for name, _ in model.named_parameters())


def test_it_accepts_plain_reward_functions_from_python(tmp_path, policy, prompts, capsys):
    def says_yes(completions, **kwargs):
        return [1.0 if "yes" in c else 0.0 for c in completions]

    assert train_grpo(_spec(tmp_path, policy, prompts, max_steps=1, preset="gspo"), [says_yes], [1.0]) == 0
    names = {e["name"] for e in map(parse_line, capsys.readouterr().out.splitlines()) if e and e["kind"] == "metric"}
    assert "rewards/says_yes/mean" in names


def test_it_rejects_a_reward_spec_reading_a_missing_column(tmp_path, policy, prompts):
    reward = {"name": "r", "components": [{"kind": "verifier", "name": "v", "reference_column": "answer"}]}
    with pytest.raises(UserError, match=r"reward_spec: .*column 'answer' is not in the dataset"):
        train_grpo(_spec(tmp_path, policy, prompts, reward_spec=reward))


def test_it_rejects_a_reward_spec_whose_model_was_deleted(tmp_path, policy, prompts):
    reward = {"name": "r", "components": [{"kind": "reward_model", "name": "rm", "path": str(tmp_path / "gone")}]}
    with pytest.raises(UserError, match="reward_spec: .*rm"):
        train_grpo(_spec(tmp_path, policy, prompts, reward_spec=reward))


def test_it_names_the_line_of_a_prompt_row_without_a_prompt(tmp_path, policy):
    snapshot = tmp_path / "prompts.jsonl"
    snapshot.write_text('{"prompt": "hello", "reference": "yes"}\n{"text": "oops", "reference": "no"}\n')
    with pytest.raises(UserError, match=r"prompts\.jsonl:2: missing column 'prompt'"):
        train_grpo(_spec(tmp_path, policy, snapshot))


def test_it_says_a_missing_policy_directory_does_not_exist(tmp_path, prompts):
    with pytest.raises(UserError, match="policy: model directory .* does not exist"):
        train_grpo(_spec(tmp_path, tmp_path / "no-policy", prompts))


def test_it_drops_prompts_longer_than_max_prompt_length(tmp_path, policy, prompts):
    with pytest.raises(UserError, match="every prompt is longer than max_prompt_length=1 tokens"):
        train_grpo(_spec(tmp_path, policy, prompts, max_prompt_length=1))


def test_it_explains_nan_probabilities_while_generating(tmp_path, policy, prompts):
    """A policy whose logits are NaN cannot sample a token; the run says why and what to change."""
    import torch
    from transformers import AutoModelForCausalLM

    broken = tmp_path / "nan-policy"
    model = AutoModelForCausalLM.from_pretrained(policy)
    with torch.no_grad():
        model.model.norm.weight.fill_(float("nan"))
    model.save_pretrained(broken)
    for name in Path(policy).iterdir():
        if "token" in name.name or name.name == "chat_template.jinja":
            (broken / name.name).write_bytes(name.read_bytes())
    with pytest.raises(UserError, match=r"next-token probabilities held NaN/inf.*lower learning_rate \(now 0.0001\)"):
        train_grpo(_spec(tmp_path, broken, prompts))
    assert not (tmp_path / "run" / "model").exists()


def _mixed_prompts(path: Path, n: int = 16) -> Path:
    """Half math rows with an ``answer`` column, half chat rows without it (as a real prompt set is)."""
    rows = [{"prompt": f"w{i} plus w{i}?", "task": "math", "answer": "yes"} if i % 2 == 0
            else {"prompt": f"say w{i}", "task": "chat"} for i in range(n)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_it_trains_on_prompts_whose_rows_do_not_share_columns(tmp_path, policy, capsys):
    """A column only some rows have is None on the others; the verifier reading it gives no reward there."""
    reward = {"name": "mixed", "components": [
        {"kind": "verifier", "name": "correct", "reference_column": "answer", "mode": "exact", "weight": 1.0},
        {"kind": "length_penalty", "name": "overlong", "max_length": 6, "cache_length": 4, "weight": 0.5,
         "when": {"column": "task", "equals": "chat"}}]}
    snapshot = _mixed_prompts(tmp_path / "mixed.jsonl")
    assert train_grpo(_spec(tmp_path, policy, snapshot, reward_spec=reward, max_steps=1, samples_per_report=8)) == 0
    samples = [e for e in map(parse_line, capsys.readouterr().out.splitlines()) if e and e["kind"] == "sample"]
    assert samples
    for s in samples:
        math_row = s["prompt"].endswith("?")
        # math rows: the verifier scores, the chat-only penalty does not apply; chat rows: the reverse
        assert (s["rewards"]["correct"] is None) == (not math_row)
        assert (s["rewards"]["overlong"] is None) == math_row


def test_it_rejects_prompts_that_no_component_can_score(tmp_path, policy):
    """Rows lacking the only column the reward reads would get no reward at all: say which and how many."""
    reward = {"name": "r", "components": [{"kind": "verifier", "name": "correct", "reference_column": "answer"}]}
    snapshot = _mixed_prompts(tmp_path / "mixed.jsonl")
    with pytest.raises(UserError, match=r"8 of 16 prompts lack column 'answer'.*'correct'"):
        train_grpo(_spec(tmp_path, policy, snapshot, reward_spec=reward))


def test_resuming_a_run_that_reached_max_steps_trains_no_further_and_publishes(tmp_path, policy, prompts, capsys):
    """A run stopped (cancelled) right at its last step left checkpoint-2 of 2: resuming it must not run a
    step 3; it publishes the policy of checkpoint-2 and succeeds."""
    import shutil

    spec = _spec(tmp_path, policy, prompts, max_steps=2, save_steps=1, logging_steps=1)
    assert train_grpo(spec) == 0
    shutil.rmtree(tmp_path / "run" / "model")  # as if the stop came before the model was published
    capsys.readouterr()
    assert train_grpo(spec.model_copy(update={"resume": True})) == 0
    events = [e for e in map(parse_line, capsys.readouterr().out.splitlines()) if e]
    assert max(e["step"] for e in events if e["kind"] in ("progress", "metric")) == 2
    assert {e["total"] for e in events if e["kind"] == "progress"} == {2}
    [artifact] = [e for e in events if e["kind"] == "artifact"]
    assert artifact["type"] == "policy" and artifact["step"] == 2

    import torch
    from safetensors.torch import load_file

    published = load_file(tmp_path / "run" / "model" / "model.safetensors")
    checkpoint = load_file(tmp_path / "run" / "checkpoints" / "checkpoint-2" / "model.safetensors")
    assert published.keys() == checkpoint.keys()
    assert all(torch.equal(published[k], checkpoint[k]) for k in published)


# ---------------------------------------------------------------- presets whose clip must be able to act


def _ratio_can_differ_from_one(config) -> bool:
    """TRL's own test (GRPOTrainer._generate_and_score_completions) for computing old log-probabilities."""
    return config.gradient_accumulation_steps % (config.steps_per_generation * config.num_iterations) != 0


@pytest.mark.parametrize(("preset", "minibatches"), [("dapo", 16), ("gspo", 4)])
def test_it_splits_each_rollout_into_the_papers_minibatches_so_the_clip_acts(tmp_path, preset, minibatches):
    from rlcore.training.grpo import grpo_config

    for accumulation in (1, 2):
        spec = GRPOTrainSpec(output_dir=tmp_path, policy="p", prompt_snapshot="s.jsonl", reward_spec=REWARD_SPEC,
                             preset=preset, per_device_train_batch_size=8, num_generations=4, device="cpu",
                             gradient_accumulation_steps=accumulation)
        config = grpo_config(spec, tmp_path / "ck", None)
        assert config.steps_per_generation == minibatches * accumulation
        assert _ratio_can_differ_from_one(config) and spec.clip_warning() is None


def test_it_warns_on_the_form_text_and_in_the_log_when_the_clip_is_inert(tmp_path, policy, prompts, capsys):
    from rlcore.training.grpo import grpo_config

    def says_yes(completions, **kwargs):
        return [1.0 if "yes" in c else 0.0 for c in completions]

    spec = _spec(tmp_path, policy, prompts, max_steps=1, preset="gspo", steps_per_generation=1)
    assert not _ratio_can_differ_from_one(grpo_config(spec, tmp_path / "ck", None))
    assert "preset 'gspo': its clip range (epsilon 0.0003, epsilon_high 0.0004) never acts" in spec.clip_warning()
    assert train_grpo(spec, [says_yes], [1.0]) == 0
    assert "rlcore: warning: preset 'gspo': its clip range" in capsys.readouterr().err
    # the on-policy presets keep TRL's single update and say nothing
    assert _spec(tmp_path, policy, prompts, preset="grpo").clip_warning() is None


def test_it_says_how_many_prompts_one_rollout_of_the_preset_needs(tmp_path, policy, prompts):
    spec = _spec(tmp_path, policy, prompts, preset="dapo")  # 8 x 16 mini-batches / 4 generations = 32 prompts
    with pytest.raises(UserError, match=r"16 prompts, but one rollout of preset 'dapo' needs 32 \(.*steps_per_gen"):
        train_grpo(spec)


@pytest.mark.parametrize("normalization", ["group_zscore", "normalize_then_sum"])
def test_it_refuses_dr_grpo_with_a_normalisation_that_divides_by_a_std(tmp_path, policy, prompts, normalization):
    from rlcore.training.specs import load_spec

    path = tmp_path / "grpo.json"
    data = json.loads(_spec(tmp_path, policy, prompts).model_dump_json())
    path.write_text(json.dumps({**data, "preset": "dr_grpo",
                                "reward_spec": {**REWARD_SPEC, "normalization": normalization}}))
    with pytest.raises(UserError, match=f"preset 'dr_grpo' removes .* reward_spec.normalization '{normalization}'"):
        load_spec(path, "grpo")


def test_a_stop_during_the_last_step_still_completes_and_publishes(tmp_path, policy, prompts):
    """SIGTERM (a cancel) as the only step runs: the plan completes, so the run publishes and exits 0."""
    import os
    import signal

    spec_path = tmp_path / "grpo.json"
    spec_path.write_text(_spec(tmp_path, policy, prompts, max_steps=1, save_steps=1).model_dump_json())
    child = subprocess.Popen([sys.executable, "-m", "rlcore", "train", "grpo", str(spec_path)], cwd=ROOT,
                             stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    for line in child.stdout:
        if '"progress"' in line:  # training began: SIGTERM is now a stop request
            os.kill(child.pid, signal.SIGTERM)
            break
    rest = child.stdout.read()
    assert child.wait(timeout=120) == 0
    assert '"type": "policy"' in rest and (tmp_path / "run" / "model" / "config.json").is_file()
