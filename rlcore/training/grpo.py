"""Train a policy with TRL's GRPOTrainer against a hybrid reward (``rlcore.rewards.RewardSpec``).

Layout of ``spec.output_dir``::

    spec.json        the validated spec this run used
    metrics.jsonl    every metric TRL logs (reward, rewards/<component>/mean, kl, entropy, clip_ratio/...)
    samples.jsonl    sample completions with per-component rewards and advantages, every sample_every steps
    checkpoints/     TRL checkpoints (checkpoint-<step>)
    model/           the finished policy (LoRA adapters merged in), announced as a "policy" artifact

The reward spec becomes TRL ``reward_funcs`` + ``reward_weights`` through
``rlcore.rewards.trl_adapter.build_reward_funcs``; TRL logs each function as ``rewards/<name>/mean``.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from rlcore.errors import UserError
from rlcore.events import emit_artifact
from rlcore.training.runtime import (EXIT_STOPPED, StopRequest, device_arguments, is_non_finite_sampling,
                                     is_out_of_memory, last_checkpoint, non_finite_loss_message,
                                     non_finite_sampling_message, out_of_memory_message, plan_complete,
                                     publish_directory, resolve_model_source, restore_if_complete, staging_directory)
from rlcore.training.snapshot import prompt_rows
from rlcore.training.specs import GRPOTrainSpec


def objective_arguments(spec: GRPOTrainSpec) -> dict[str, Any]:
    """GRPOConfig fields of the spec's objective: the preset, the spec's overrides, TRL's extra loss knobs.
    rlcore's own losses (dhpo) run on TRL's dapo aggregation inside ``objectives.RlcoreGRPOTrainer``."""
    settings = spec.objective_settings()
    if settings["loss_type"] == "dhpo":
        settings["loss_type"] = "dapo"
    return {**settings, "delta": spec.delta, "top_entropy_quantile": spec.top_entropy_quantile,
            "entropy_coef": spec.entropy_coef, "off_policy_mask_threshold": spec.off_policy_mask_threshold}


def decide_gradient_checkpointing(spec: GRPOTrainSpec, *, on_gpu: bool, device_memory: int | None,
                                  n_params: int | None, hidden_size: int | None, num_layers: int | None,
                                  bf16: bool) -> tuple[bool, str]:
    """Gradient checkpointing on or off, and why: the user's choice; off on CPU (it only slows one); on a GPU off
    when weights, gradients, AdamW state and the batch's activations fit in 80% of the device's memory.

    The activation estimate is 34 bytes x tokens x hidden size per layer (Korthikanti et al. 2022, 16-bit, no
    recomputation), with tokens = per-device batch x (max_prompt_length + max_completion_length).

    >>> spec = GRPOTrainSpec.model_construct(gradient_checkpointing=None, per_device_train_batch_size=8,
    ...                                      max_prompt_length=512, max_completion_length=256)
    >>> decide_gradient_checkpointing(spec, on_gpu=True, device_memory=80 * 2**30, n_params=500_000_000,
    ...                               hidden_size=896, num_layers=24, bf16=True)[0]
    False
    >>> decide_gradient_checkpointing(spec, on_gpu=True, device_memory=8 * 2**30, n_params=500_000_000,
    ...                               hidden_size=896, num_layers=24, bf16=True)[0]
    True
    """
    if spec.gradient_checkpointing is not None:
        return spec.gradient_checkpointing, "set in the spec"
    if not on_gpu:
        return False, "off on CPU: recomputing activations only slows a CPU run"
    if not (device_memory and n_params and hidden_size and num_layers):
        return True, "on: the device memory or the model size could not be read, so memory is saved to be safe"
    state = n_params * ((2 + 2) if bf16 else (4 + 4)) + n_params * 8  # weights + gradients + AdamW m and v (fp32)
    tokens = spec.per_device_train_batch_size * ((spec.max_prompt_length or 512) + spec.max_completion_length)
    activations = 34 * tokens * hidden_size * num_layers
    need, budget = state + activations, 0.8 * device_memory
    verdict = "off" if need <= budget else "on"
    return need > budget, (f"{verdict}: estimated {need / 2**30:.1f} GiB (weights, gradients, AdamW state, "
                           f"activations) vs {budget / 2**30:.1f} GiB (80% of the device)")


def speed_arguments(spec: GRPOTrainSpec, device: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any], list[str]]:
    """GRPOConfig speed fields, the spec fields they resolve ``auto`` to (recorded in spec.json), and one log line
    per choice with its reason. Options the libraries or the device cannot honour are UserErrors here."""
    import torch

    on_gpu = not device["use_cpu"]
    reasons, resolved = [], {}
    backend = spec.generation_backend
    if backend == "auto":
        backend = "continuous_batching" if on_gpu else "generate"
        reasons.append(f"generation: {backend} (auto: " + ("transformers continuous batching on a GPU)" if on_gpu else
                       "model.generate on CPU, where the paged engine has no kernels to gain from)"))
    else:
        reasons.append(f"generation: {backend} (set in the spec)")
    if backend == "vllm" and not on_gpu:
        raise UserError("generation_backend: 'vllm' needs a CUDA GPU, and this run is on CPU; choose 'auto' or 'generate'")
    if spec.use_liger_kernel and not on_gpu:
        raise UserError("use_liger_kernel: Liger's Triton kernels need a GPU, and this run is on CPU; turn it off")
    resolved["generation_backend"] = backend
    n_params = hidden = layers = memory = None
    if on_gpu and spec.gradient_checkpointing is None:
        from accelerate import init_empty_weights
        from transformers import AutoConfig, AutoModelForCausalLM

        config = AutoConfig.from_pretrained(spec.policy)
        with init_empty_weights():
            n_params = sum(p.numel() for p in AutoModelForCausalLM.from_config(config).parameters())
        hidden = getattr(config, "hidden_size", None)
        layers = getattr(config, "num_hidden_layers", None)
        memory = torch.cuda.get_device_properties(torch.cuda.current_device()).total_memory
    checkpointing, why = decide_gradient_checkpointing(spec, on_gpu=on_gpu, device_memory=memory, n_params=n_params,
                                                       hidden_size=hidden, num_layers=layers, bf16=device["bf16"])
    reasons.append(f"gradient checkpointing: {why}")
    resolved["gradient_checkpointing"] = checkpointing
    arguments: dict[str, Any] = {
        "gradient_checkpointing": checkpointing, "use_liger_kernel": spec.use_liger_kernel,
        "use_transformers_continuous_batching": backend == "continuous_batching", "use_vllm": backend == "vllm"}
    if backend == "vllm":
        arguments["vllm_mode"] = spec.vllm_mode
    if spec.load_in_training_precision and (device["bf16"] or device["fp16"]):
        dtype = "bfloat16" if device["bf16"] else "float16"
        arguments["model_init_kwargs"] = {"dtype": dtype}
        reasons.append(f"weights: loaded in {dtype}, the training precision")
    else:
        reasons.append("weights: loaded in float32" + ("" if spec.load_in_training_precision else
                                                       " (load_in_training_precision is off)"))
    if spec.use_liger_kernel:
        reasons.append("kernels: Liger (RMSNorm, RoPE, SwiGLU)")
    return arguments, resolved, reasons


def recorded_speed_choices(spec: GRPOTrainSpec) -> GRPOTrainSpec:
    """On resume, the ``auto`` speed choices the run's spec.json recorded, so a resumed run trains the same way."""
    import json

    recorded = spec.output_dir / "spec.json"
    if not (spec.resume and recorded.is_file()):
        return spec
    earlier = json.loads(recorded.read_text())
    update = {}
    if spec.generation_backend == "auto" and earlier.get("generation_backend", "auto") != "auto":
        update["generation_backend"] = earlier["generation_backend"]
    if spec.gradient_checkpointing is None and earlier.get("gradient_checkpointing") is not None:
        update["gradient_checkpointing"] = earlier["gradient_checkpointing"]
    return spec.model_copy(update=update) if update else spec


def grpo_config(spec: GRPOTrainSpec, output_dir: Path, reward_weights: Sequence[float] | None,
                speed: dict[str, Any] | None = None):
    """The TRL ``GRPOConfig`` of a spec: its preset plus its own hyper-parameters and device defaults;
    ``speed`` (from :func:`speed_arguments`) replaces the device's gradient-checkpointing default."""
    from trl import GRPOConfig

    from rlcore.rewards.trl_adapter import trl_aggregation
    from rlcore.training.mirrors import mirror_arguments

    device = device_arguments(spec)
    if speed is None:
        speed = {"gradient_checkpointing": device["gradient_checkpointing"]}
    device = {k: v for k, v in device.items() if k not in speed}

    return GRPOConfig(
        output_dir=str(output_dir), seed=spec.seed, max_steps=spec.max_steps or -1,
        num_train_epochs=spec.num_train_epochs, learning_rate=spec.learning_rate,
        lr_scheduler_type=spec.lr_scheduler_type, warmup_steps=spec.warmup_steps, weight_decay=spec.weight_decay,
        max_grad_norm=spec.max_grad_norm, per_device_train_batch_size=spec.per_device_train_batch_size,
        gradient_accumulation_steps=spec.gradient_accumulation_steps, steps_per_generation=spec.rollout_steps,
        num_iterations=spec.num_iterations, logging_steps=spec.logging_steps, save_strategy="steps",
        save_steps=spec.save_steps, save_total_limit=spec.save_total_limit, num_generations=spec.num_generations,
        max_completion_length=spec.max_completion_length, temperature=spec.temperature, top_p=spec.top_p,
        reward_weights=list(reward_weights) if reward_weights is not None else None,
        multi_objective_aggregation=trl_aggregation(spec.reward_spec), disable_tqdm=True,
        **mirror_arguments(spec.report_to, "policy", spec.output_dir.name),
        **objective_arguments(spec), **device, **speed)


def _num_processes() -> int:
    """Processes of this run (``accelerate launch`` sets WORLD_SIZE), without starting accelerate here."""
    import os

    return int(os.environ.get("WORLD_SIZE", "1"))


def lora_config(spec: GRPOTrainSpec):
    """A peft ``LoraConfig`` for the spec's ``lora`` block, or None."""
    if spec.lora is None:
        return None
    from peft import LoraConfig

    return LoraConfig(r=spec.lora.r, lora_alpha=spec.lora.alpha, lora_dropout=spec.lora.dropout,
                      target_modules=spec.lora.target_modules, task_type="CAUSAL_LM")


def checked_reward_spec(spec: GRPOTrainSpec, columns: Sequence[str], rows: Sequence[dict[str, Any]] | None = None,
                        source: str = "prompt_snapshot"):
    """The spec's RewardSpec, validated once where the child reads it, before any model loads: against the
    prompt columns (a missing column, a deleted reward model, a bad rubric are UserErrors naming the
    component) and, given the rows, against what each row holds (``prompt_column_problems``)."""
    from rlcore.rewards import validate_spec

    reward_spec = validate_spec(spec.reward_spec, dataset_columns=columns, source="reward_spec")
    if rows is not None:
        problems = prompt_column_problems(reward_spec, rows)
        if problems:
            raise UserError(f"{source}: " + "; ".join(problems))
    return reward_spec


def reward_functions(reward_spec, tokenizer: Any = None) -> tuple[list[Callable[..., Any]], list[float]]:
    """TRL reward functions and weights (each component's weight, or the normalised total's) for a RewardSpec
    that :func:`checked_reward_spec` validated. ``tokenizer`` (the policy's) measures PAR references in the
    same tokens as the completions."""
    from rlcore.rewards.engine import TokenCounter
    from rlcore.rewards.trl_adapter import build_reward_funcs

    funcs, weights = build_reward_funcs(reward_spec, checked=True,
                                        token_counter=TokenCounter(tokenizer) if tokenizer is not None else None)
    return list(funcs), list(weights)


def _has_value(row: dict[str, Any], column: str) -> bool:
    value = row.get(column)
    return value is not None and not (isinstance(value, str) and not value.strip())


def _needed_columns(component: Any) -> list[str]:
    """Columns of which a component needs at least one on a row to score it (else it returns None there)."""
    from rlcore.rewards.spec import RubricRulesComponent, VerifierComponent
    from rlcore.rules import AnswerMatchRule

    if isinstance(component, VerifierComponent):
        return [component.reference_column]
    if isinstance(component, RubricRulesComponent) and component.rubric is not None:
        rules = [c.rule for c in component.rubric.criteria if c.rule is not None]
        if rules and all(isinstance(rule, AnswerMatchRule) for rule in rules):
            return sorted({rule.reference_column for rule in rules})
    return []


def prompt_column_problems(reward_spec: Any, rows: Sequence[dict[str, Any]]) -> list[str]:
    """What the prompt rows lack for the reward: prompts no component can score because a column it reads is
    missing there, and a group/PAR column missing on some rows. Empty when every prompt can be scored.

    A component whose column is missing on a row (or whose ``when`` does not hold) gives None there, as TRL
    allows; that is fine while another component scores the row. A row that nothing scores would only cost
    generation time and be reported with reward 0, so it is refused with the column and the count.

    >>> from rlcore.rewards.spec import RewardSpec
    >>> spec = RewardSpec(name="r", components=[{"kind": "verifier", "name": "correct", "reference_column": "answer"}])
    >>> prompt_column_problems(spec, [{"prompt": "2+2?", "answer": "4"}, {"prompt": "Hi"}, {"prompt": "Yo"}])
    ["2 of 3 prompts lack column 'answer', which component 'correct' needs, and no other component scores them: give those prompts 'answer', pick a prompt set where every row has it, or add a component that applies to them (one without 'when' or conditioned on their rows)"]
    """
    n = len(rows)
    lacking: dict[tuple[str, tuple[str, ...]], int] = {}
    par_column = reward_spec.par_reference_column if reward_spec.normalization == "par" else None
    for row in rows:
        scored, missing = False, []
        for component in reward_spec.components:
            if component.when is not None and not component.when.holds(row):
                continue
            needed = _needed_columns(component)
            if not needed or any(_has_value(row, column) for column in needed):
                scored = True
                break
            missing.append((needed[0], component.name))
        if not scored and missing:
            key = (missing[0][0], tuple(name for _, name in missing))
            lacking[key] = lacking.get(key, 0) + 1
    problems = []
    for (column, names), count in lacking.items():
        which = ", ".join(repr(name) for name in names)
        problems.append(f"{count} of {n} prompts lack column {column!r}, which component{'s' if len(names) > 1 else ''} "
                        f"{which} need{'' if len(names) > 1 else 's'}, and no other component scores them: give those "
                        f"prompts {column!r}, pick a prompt set where every row has it, or add a component that applies "
                        "to them (one without 'when' or conditioned on their rows)")
    if par_column:
        count = sum(not _has_value(row, par_column) for row in rows)
        if count:
            problems.append(f"{count} of {n} prompts lack par_reference_column {par_column!r}; PAR gives them no "
                            "reward: give every prompt a reference response, or pick another normalization")
    if reward_spec.group_column and reward_spec.normalization != "none":
        count = sum(not _has_value(row, reward_spec.group_column) for row in rows)
        if count:
            problems.append(f"{count} of {n} prompts lack group_column {reward_spec.group_column!r}; they would be "
                            "normalised together as one group: give every prompt a group, or clear group_column")
    return problems


def keep_short_prompts(rows: list[dict[str, Any]], tokenizer: Any, max_prompt_length: int | None,
                       source: str) -> list[dict[str, Any]]:
    """Drop prompts longer than ``max_prompt_length`` tokens (after the chat template); none left is an error."""
    if max_prompt_length is None:
        return rows

    def length(prompt: Any) -> int:
        if isinstance(prompt, str):
            return len(tokenizer(prompt, add_special_tokens=False)["input_ids"])
        return len(tokenizer.apply_chat_template(prompt, tokenize=True, add_generation_prompt=True))

    kept = [r for r in rows if length(r["prompt"]) <= max_prompt_length]
    if not kept:
        raise UserError(f"{source}: every prompt is longer than max_prompt_length={max_prompt_length} tokens; "
                        "raise max_prompt_length")
    if len(kept) < len(rows):
        print(f"rlcore: dropped {len(rows) - len(kept)} prompts longer than max_prompt_length={max_prompt_length}",
              file=sys.stderr, flush=True)
    return kept


def train_grpo(spec: GRPOTrainSpec, reward_funcs: Sequence[Callable[..., Any]] | None = None,
               reward_weights: Sequence[float] | None = None) -> int:
    """Run a GRPO spec end to end; return the exit code (0, or 143 when stopped and checkpointed).

    ``reward_funcs``/``reward_weights`` replace the spec's RewardSpec when given (Python callers, benches).
    """
    policy = resolve_model_source(spec.policy, "policy")
    rows = prompt_rows(spec.prompt_snapshot)
    reward_funcs_given = reward_funcs is not None
    if not reward_funcs_given:  # checked before any model loads; built with the tokenizer below
        reward_spec = checked_reward_spec(spec, list(rows[0]), rows, str(spec.prompt_snapshot))
    import datasets
    from datasets import Dataset
    from transformers import AutoTokenizer

    from rlcore.training.mirrors import point_mirrors_at
    from rlcore.training.reporting import EventReporter, RunFiles, detach_console_printer

    datasets.disable_progress_bars()
    tokenizer = AutoTokenizer.from_pretrained(policy)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    rows = keep_short_prompts(rows, tokenizer, spec.max_prompt_length, str(spec.prompt_snapshot))
    if not reward_funcs_given:
        reward_funcs, reward_weights = reward_functions(reward_spec, tokenizer=tokenizer)
    if len(rows) < spec.prompts_per_rollout(_num_processes()):
        raise UserError(
            f"{spec.prompt_snapshot}: {len(rows)} prompts, but one rollout of preset {spec.preset!r} needs "
            f"{spec.prompts_per_rollout(_num_processes())} (per_device_train_batch_size "
            f"{spec.per_device_train_batch_size} x steps_per_generation {spec.rollout_steps} / num_generations "
            f"{spec.num_generations}); add prompts or lower per_device_train_batch_size or steps_per_generation")
    warning = spec.clip_warning()
    if warning:
        print(f"rlcore: warning: {warning}", file=sys.stderr, flush=True)
    from rlcore.training import objectives

    spec = recorded_speed_choices(spec)
    speed, resolved, reasons = speed_arguments(spec, device_arguments(spec))
    for line in [objectives.summary(spec), *reasons]:
        print(f"rlcore: {line}", file=sys.stderr, flush=True)
    spec = spec.model_copy(update=resolved)  # spec.json records what auto chose, so a resume trains the same way
    spec.output_dir.mkdir(parents=True, exist_ok=True)
    (spec.output_dir / "spec.json").write_text(spec.model_dump_json(indent=1))
    files = RunFiles(spec.output_dir)
    stop = StopRequest().install()
    ckpt_dir = spec.output_dir / "checkpoints"
    reporter = EventReporter(files, stop, sample_every=spec.sample_every, samples_per_report=spec.samples_per_report)
    point_mirrors_at(spec.output_dir, spec.report_to)
    try:
        from trl import GRPOTrainer

        trainer_class, extra = GRPOTrainer, {}
        if objectives.needs_rlcore_trainer(spec):
            from rlcore.training.specs import DHPOSpec

            trainer_class = objectives.RlcoreGRPOTrainer
            extra = {"dhpo": (spec.dhpo or DHPOSpec()) if spec.objective_settings()["loss_type"] == "dhpo" else None,
                     "divergence": spec.divergence,
                     "initial_samples_path": spec.output_dir / objectives.INITIAL_SAMPLES}
        try:
            trainer = trainer_class(model=policy, reward_funcs=list(reward_funcs),
                                    args=grpo_config(spec, ckpt_dir, reward_weights, speed),
                                    train_dataset=Dataset.from_list(rows), processing_class=tokenizer,
                                    callbacks=[reporter], peft_config=lora_config(spec), **extra)
        except ValueError as exc:
            raise UserError(f"{spec.policy}: cannot set up GRPO: {exc}") from exc
        reporter.trainer = trainer
        detach_console_printer(trainer)
        try:
            resume_from = last_checkpoint(ckpt_dir) if spec.resume else None
            if not restore_if_complete(trainer, resume_from):
                trainer.train(resume_from_checkpoint=resume_from)
        except Exception as exc:
            if is_out_of_memory(exc):
                raise UserError(out_of_memory_message(spec, "max_completion_length")) from exc
            if is_non_finite_sampling(exc):
                raise UserError(non_finite_sampling_message(spec)) from exc
            raise
        if reporter.non_finite_step is not None:
            raise UserError(non_finite_loss_message(spec, reporter.non_finite_step, "the reward for NaN values"))
        if stop.requested and not plan_complete(trainer.state):  # a stop at the last step still finishes
            return EXIT_STOPPED
        final = spec.output_dir / "model"
        if trainer.accelerator.is_main_process:
            staging = staging_directory(final)
            save_policy(trainer, staging)
            publish_directory(staging, final)
            logged = [h for h in trainer.state.log_history if "reward" in h]
            metrics = {k: v for k, v in (logged[-1] if logged else {}).items()
                       if isinstance(v, (int, float)) and (k.startswith("reward") or k in ("kl", "entropy"))}
            emit_artifact("policy", str(final), metrics=metrics, step=trainer.state.global_step)
        trainer.accelerator.wait_for_everyone()
        return 0
    finally:
        stop.uninstall()
        files.close()


def save_policy(trainer: Any, directory: Path) -> None:
    """Save the trained policy and tokenizer as a plain Hugging Face model (LoRA adapters merged in)."""
    model = trainer.accelerator.unwrap_model(trainer.model)
    if hasattr(model, "merge_and_unload"):
        model = model.merge_and_unload()
        model.save_pretrained(str(directory))
        trainer.processing_class.save_pretrained(str(directory))
    else:
        trainer.save_model(str(directory))
