"""Policy objectives (TRL's losses, DHPO, the DPH-RL divergence) and the speed options of a GRPO run, on CPU."""

import json
import math

import numpy as np
import pytest
import torch
from pydantic import ValidationError
from scipy.spatial.distance import jensenshannon
from scipy.stats import entropy as kl_divergence

from rlcore.errors import UserError
from rlcore.training.grpo import decide_gradient_checkpointing, grpo_config, train_grpo
from rlcore.training.objectives import dhpo_per_token_loss, f_divergence
from rlcore.training.specs import GRPOTrainSpec
from rlcore.training.tiny_models import SHORT_YES_SPEC as REWARD_SPEC



def _spec(tmp_path, policy="p", prompts="s.jsonl", **overrides) -> GRPOTrainSpec:
    fields = dict(output_dir=tmp_path / "run", policy=str(policy), prompt_snapshot=prompts, reward_spec=REWARD_SPEC,
                  preset="grpo", max_steps=2, per_device_train_batch_size=8, num_generations=4,
                  steps_per_generation=2, max_completion_length=8, save_steps=100, learning_rate=1e-3, device="cpu")
    fields.update(overrides)
    return GRPOTrainSpec(**fields)


# --- DHPO and the divergence against hand computation --------------------------------------------------------------

def _dhpo_by_hand(logp, old, adv, mask, ent, mixing, e_tok, e_tok_hi, e_seq, e_seq_hi):
    """DHPO per token, straight from the formula in docs/training.md, in numpy loops."""
    out = np.zeros_like(logp)
    for b in range(logp.shape[0]):
        valid = [t for t in range(logp.shape[1]) if mask[b, t]]
        s = math.exp(sum(logp[b, t] - old[b, t] for t in valid) / len(valid))
        mean_h = sum(ent[b, t] for t in valid) / len(valid)
        for t in range(logp.shape[1]):
            r = math.exp(logp[b, t] - old[b, t])
            w = 0.5 if mixing == "average" else ent[b, t] / (ent[b, t] + mean_h)
            m = w * r + (1 - w) * s
            mc = w * min(max(r, 1 - e_tok), 1 + e_tok_hi) + (1 - w) * min(max(s, 1 - e_seq), 1 + e_seq_hi)
            out[b, t] = -min(m * adv[b], mc * adv[b])
    return out


@pytest.mark.parametrize("mixing", ["average", "entropy"])
def test_dhpo_loss_matches_the_formula_computed_by_hand(mixing):
    rng = np.random.default_rng(0)
    logp = rng.normal(-2.0, 0.5, (3, 5))
    old = logp + rng.normal(0.0, 0.3, (3, 5))  # ratios well outside both clip ranges, so both branches clip
    adv = np.array([1.5, -0.7, 0.4])
    mask = np.array([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0], [1, 1, 1, 1, 0]], dtype=float)
    ent = rng.uniform(0.1, 3.0, (3, 5))
    eps = dict(epsilon_token=0.2, epsilon_token_high=0.28, epsilon_sequence=0.05, epsilon_sequence_high=0.08)
    got, stats = dhpo_per_token_loss(torch.tensor(logp), torch.tensor(old), torch.tensor(adv), torch.tensor(mask),
                                     torch.tensor(ent), mixing=mixing, **eps)
    want = _dhpo_by_hand(logp, old, adv, mask, ent, mixing, *eps.values())
    assert np.allclose(got.numpy() * mask, want * mask, atol=1e-10)
    assert stats["token_clipped"][mask > 0].sum() > 0 and stats["sequence_clipped"][mask > 0].sum() > 0
    # the DAPO aggregation over the batch's tokens, as the trainer applies it
    assert float((got * torch.tensor(mask)).sum() / mask.sum()) == pytest.approx((want * mask).sum() / mask.sum())


def test_dhpo_equals_grpo_token_clip_when_every_token_leans_on_its_own_ratio():
    """Sanity of the mix: a weight of 1 everywhere is exactly the PPO/GRPO token-level clipped surrogate."""
    logp = torch.tensor([[-1.0, -2.0, -0.5]])
    old = torch.tensor([[-1.4, -1.9, -0.2]])
    adv, mask = torch.tensor([2.0]), torch.ones(1, 3)
    ent = torch.tensor([[1e9, 1e9, 1e9]])  # H_t / (H_t + mean H) = 1/2 here, so use "average" vs hand PPO
    got, _ = dhpo_per_token_loss(logp, old, adv, mask, ent, mixing="average", epsilon_token=0.2,
                                 epsilon_token_high=0.2, epsilon_sequence=0.2, epsilon_sequence_high=0.2)
    r = torch.exp(logp - old)
    s = torch.exp((logp - old).mean())
    m = 0.5 * r + 0.5 * s
    mc = 0.5 * r.clamp(0.8, 1.2) + 0.5 * s.clamp(0.8, 1.2)
    assert torch.allclose(got, -torch.min(m * 2.0, mc * 2.0))


def test_the_divergences_match_scipy_on_a_full_distribution():
    """Weighting every outcome by pi_0 (the mask) turns the per-token estimator into the exact f-divergence."""
    p0 = np.array([0.5, 0.2, 0.2, 0.1])
    p1 = np.array([0.1, 0.3, 0.4, 0.2])
    logp1, logp0, weights = torch.tensor(np.log(p1)), torch.tensor(np.log(p0)), torch.tensor(p0)
    assert f_divergence(logp1, logp0, weights, "forward_kl").item() == pytest.approx(kl_divergence(p0, p1))
    assert f_divergence(logp1, logp0, weights, "js").item() == pytest.approx(jensenshannon(p0, p1) ** 2)


def test_the_divergence_of_sampled_tokens_matches_the_generator_by_hand():
    logp = torch.tensor([[-1.0, -3.0, -0.2], [-2.0, -0.5, -9.0]])
    logp0 = torch.tensor([[-1.5, -2.0, -0.2], [-1.0, -0.7, -1.0]])
    mask = torch.tensor([[1, 1, 1], [1, 1, 0]])
    u = [math.exp(a - b) for row_a, row_b, row_m in zip(logp.tolist(), logp0.tolist(), mask.tolist())
         for a, b, m in zip(row_a, row_b, row_m) if m]
    fkl = sum(-math.log(x) for x in u) / len(u)
    js = sum(0.5 * (x * math.log(x) - (1 + x) * math.log((1 + x) / 2)) for x in u) / len(u)
    assert f_divergence(logp, logp0, mask, "forward_kl").item() == pytest.approx(fkl)
    assert f_divergence(logp, logp0, mask, "js").item() == pytest.approx(js)


# --- the spec: TRL's losses, overrides of what a preset fixes ------------------------------------------------------

def test_a_spec_overrides_what_its_preset_fixes_and_the_config_carries_it(tmp_path):
    spec = _spec(tmp_path, preset="dapo", loss_type="cispo", epsilon_high=5.0, scale_rewards="batch",
                 importance_sampling_level="sequence", mask_truncated_completions=False, delta=1.5,
                 top_entropy_quantile=0.2, entropy_coef=0.01, off_policy_mask_threshold=0.5)
    config = grpo_config(spec, tmp_path / "ck", None)
    assert (config.loss_type, config.scale_rewards, config.importance_sampling_level) == ("cispo", "batch", "sequence")
    assert config.mask_truncated_completions is False and config.epsilon_high == 5.0 and config.delta == 1.5
    assert (config.top_entropy_quantile, config.entropy_coef, config.off_policy_mask_threshold) == (0.2, 0.01, 0.5)
    untouched = grpo_config(_spec(tmp_path, preset="dapo"), tmp_path / "ck", None)
    assert (untouched.loss_type, untouched.mask_truncated_completions) == ("dapo", True)


def test_it_refuses_luspo_without_sequence_level_ratios(tmp_path):
    with pytest.raises(ValidationError, match="luspo.*importance_sampling_level 'sequence'"):
        _spec(tmp_path, loss_type="luspo")
    assert _spec(tmp_path, preset="gspo", loss_type="luspo").objective_settings()["loss_type"] == "luspo"


def test_it_keeps_refusing_dr_grpo_with_std_scaling_even_as_an_override(tmp_path):
    with pytest.raises(ValidationError, match="dr_grpo.*scale_rewards 'group'"):
        _spec(tmp_path, loss_type="dr_grpo")
    with pytest.raises(ValidationError, match="dr_grpo.*scale_rewards 'batch'"):
        _spec(tmp_path, preset="dr_grpo", scale_rewards="batch")
    assert _spec(tmp_path, loss_type="dr_grpo", scale_rewards="none").objective_settings()["loss_type"] == "dr_grpo"


def test_it_refuses_a_dhpo_block_without_the_dhpo_loss(tmp_path):
    with pytest.raises(ValidationError, match="dhpo block only acts with loss_type 'dhpo'"):
        _spec(tmp_path, dhpo={"mixing": "entropy"})


# --- every objective trains a few steps on CPU and logs its metrics -------------------------------------------------

OBJECTIVES = [
    (dict(preset="grpo"), "clip_ratio/region_mean"),
    (dict(preset="dr_grpo"), "clip_ratio/region_mean"),
    (dict(preset="dapo", steps_per_generation=4), "clip_ratio/region_mean"),
    (dict(loss_type="bnpo"), "clip_ratio/region_mean"),
    (dict(loss_type="cispo", epsilon_high=5.0), "cispo_clip_ratio"),
    (dict(loss_type="sapo"), "entropy"),
    (dict(preset="gspo", loss_type="luspo"), "clip_ratio/region_mean"),
    (dict(loss_type="vespo"), "vespo/phi_seq_mean"),
    (dict(loss_type="dhpo", dhpo={"mixing": "entropy"}), "dhpo/mix_weight_mean"),
    (dict(loss_type="dhpo"), "dhpo/sequence_clip_ratio"),
    (dict(divergence={"kind": "forward_kl", "num_samples": 4, "batch_size": 2}), "divergence/forward_kl"),
    (dict(loss_type="dhpo", divergence={"kind": "js", "num_samples": 4}), "divergence/js"),
    (dict(generation_backend="continuous_batching"), "reward"),  # transformers' paged engine also runs on CPU
    (dict(top_entropy_quantile=0.2, entropy_coef=0.01, off_policy_mask_threshold=0.5, delta=1.5), "entropy_coef"),
]


@pytest.mark.parametrize(("overrides", "metric"), OBJECTIVES, ids=[json.dumps(o) for o, _ in OBJECTIVES])
def test_every_objective_trains_a_few_steps_and_logs_its_metrics(tmp_path, policy, prompts, overrides, metric):
    spec = _spec(tmp_path, policy, prompts, **overrides)
    assert train_grpo(spec) == 0
    names = {json.loads(line)["name"] for line in (spec.output_dir / "metrics.jsonl").read_text().splitlines()}
    assert metric in names and "reward" in names and "loss" in names
    values = [json.loads(line)["value"] for line in (spec.output_dir / "metrics.jsonl").read_text().splitlines()
              if json.loads(line)["name"] == metric]
    assert all(math.isfinite(v) for v in values)
    if "divergence" in overrides:  # the initial policy's samples are kept for a resume
        assert (spec.output_dir / "initial_policy_samples.pt").is_file()


# --- speed options: accepted, or refused with the reason -----------------------------------------------------------

def test_it_refuses_liger_kernels_without_liger_and_triton(tmp_path):
    from importlib.util import find_spec

    if find_spec("liger_kernel") and find_spec("triton"):
        pytest.skip("liger-kernel is installed here")
    with pytest.raises(ValidationError, match="use_liger_kernel needs .*not installed here"):
        _spec(tmp_path, use_liger_kernel=True)


def test_it_refuses_vllm_when_it_is_not_installed(tmp_path):
    from importlib.util import find_spec

    if find_spec("vllm"):
        pytest.skip("vllm is installed here")
    with pytest.raises(ValidationError, match="generation_backend 'vllm' needs vLLM, which is not installed"):
        _spec(tmp_path, generation_backend="vllm")


def test_it_decides_gradient_checkpointing_from_device_memory_and_says_why():
    spec = GRPOTrainSpec.model_construct(gradient_checkpointing=None, per_device_train_batch_size=16,
                                         max_prompt_length=256, max_completion_length=256)
    size = dict(n_params=494_000_000, hidden_size=896, num_layers=24, bf16=True)
    on, why = decide_gradient_checkpointing(spec, on_gpu=True, device_memory=8 * 2**30, **size)
    off, why_off = decide_gradient_checkpointing(spec, on_gpu=True, device_memory=141 * 2**30, **size)
    assert on is True and off is False and "GiB" in why and "80% of the device" in why_off
    assert decide_gradient_checkpointing(spec, on_gpu=False, device_memory=None, n_params=None, hidden_size=None,
                                         num_layers=None, bf16=False) == (False, "off on CPU: recomputing "
                                                                          "activations only slows a CPU run")


def test_it_logs_the_speed_choices_and_records_them_in_spec_json_for_a_resume(tmp_path, policy, prompts, capsys):
    spec = _spec(tmp_path, policy, prompts, device="auto")
    assert train_grpo(spec) == 0
    log = capsys.readouterr().err
    assert "rlcore: generation: generate (auto: model.generate on CPU" in log
    assert "rlcore: gradient checkpointing: off on CPU" in log and "rlcore: weights: loaded in float32" in log
    recorded = json.loads((spec.output_dir / "spec.json").read_text())
    assert recorded["generation_backend"] == "generate" and recorded["gradient_checkpointing"] is False
    # a resume keeps what the first launch chose, even where auto would now choose otherwise
    recorded["generation_backend"] = "continuous_batching"
    (spec.output_dir / "spec.json").write_text(json.dumps(recorded))
    from rlcore.training.grpo import recorded_speed_choices

    resumed = recorded_speed_choices(spec.model_copy(update={"resume": True}))
    assert resumed.generation_backend == "continuous_batching" and resumed.gradient_checkpointing is False


def test_it_refuses_liger_and_vllm_on_a_cpu_run_before_any_model_loads(tmp_path, policy, prompts):
    spec = _spec(tmp_path, policy, prompts).model_copy(update={"use_liger_kernel": True})  # as if installed
    with pytest.raises(UserError, match="use_liger_kernel: Liger's Triton kernels need a GPU"):
        train_grpo(spec)
    spec = _spec(tmp_path, policy, prompts).model_copy(update={"generation_backend": "vllm"})
    with pytest.raises(UserError, match="generation_backend: 'vllm' needs a CUDA GPU"):
        train_grpo(spec)


def test_it_loads_weights_in_bf16_when_training_in_bf16(tmp_path):
    from rlcore.training.grpo import speed_arguments

    spec = _spec(tmp_path, precision="bf16")
    arguments, _, reasons = speed_arguments(spec, {"use_cpu": True, "bf16": True, "fp16": False})
    assert arguments["model_init_kwargs"] == {"dtype": "bfloat16"} and "weights: loaded in bfloat16" in reasons[-1]
    spec = _spec(tmp_path, precision="bf16", load_in_training_precision=False)
    arguments, _, reasons = speed_arguments(spec, {"use_cpu": True, "bf16": True, "fp16": False})
    assert "model_init_kwargs" not in arguments and "load_in_training_precision is off" in reasons[-1]
