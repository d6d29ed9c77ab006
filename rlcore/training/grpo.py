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
from rlcore.training.presets import grpo_preset
from rlcore.training.runtime import (EXIT_STOPPED, StopRequest, device_arguments, is_non_finite_sampling,
                                     is_out_of_memory, last_checkpoint, non_finite_sampling_message,
                                     out_of_memory_message, publish_directory, resolve_model_source,
                                     staging_directory)
from rlcore.training.snapshot import prompt_rows
from rlcore.training.specs import GRPOTrainSpec


def grpo_config(spec: GRPOTrainSpec, output_dir: Path, reward_weights: Sequence[float] | None):
    """The TRL ``GRPOConfig`` of a spec: its preset plus its own hyper-parameters and device defaults."""
    from trl import GRPOConfig

    return GRPOConfig(
        output_dir=str(output_dir), seed=spec.seed, max_steps=spec.max_steps or -1,
        num_train_epochs=spec.num_train_epochs, learning_rate=spec.learning_rate,
        lr_scheduler_type=spec.lr_scheduler_type, warmup_steps=spec.warmup_steps, weight_decay=spec.weight_decay,
        max_grad_norm=spec.max_grad_norm, per_device_train_batch_size=spec.per_device_train_batch_size,
        gradient_accumulation_steps=spec.gradient_accumulation_steps, steps_per_generation=spec.steps_per_generation,
        num_iterations=spec.num_iterations, logging_steps=spec.logging_steps, save_strategy="steps",
        save_steps=spec.save_steps, save_total_limit=spec.save_total_limit, num_generations=spec.num_generations,
        max_completion_length=spec.max_completion_length, temperature=spec.temperature, top_p=spec.top_p,
        reward_weights=list(reward_weights) if reward_weights is not None else None,
        report_to="none", disable_tqdm=True,
        **grpo_preset(spec.preset, beta=spec.beta, epsilon=spec.epsilon, epsilon_high=spec.epsilon_high),
        **device_arguments(spec))


def lora_config(spec: GRPOTrainSpec):
    """A peft ``LoraConfig`` for the spec's ``lora`` block, or None."""
    if spec.lora is None:
        return None
    from peft import LoraConfig

    return LoraConfig(r=spec.lora.r, lora_alpha=spec.lora.alpha, lora_dropout=spec.lora.dropout,
                      target_modules=spec.lora.target_modules, task_type="CAUSAL_LM")


def reward_functions(spec: GRPOTrainSpec, columns: Sequence[str]) -> tuple[list[Callable[..., Any]], list[float]]:
    """TRL reward functions and weights for the spec's RewardSpec, checked against the prompt columns
    (a missing column, a deleted reward model, a bad rubric are UserErrors naming the component)."""
    from rlcore.rewards import validate_spec
    from rlcore.rewards.trl_adapter import build_reward_funcs

    reward_spec = validate_spec(spec.reward_spec, dataset_columns=columns, source="reward_spec")
    funcs, weights = build_reward_funcs(reward_spec)
    return list(funcs), list(weights)


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
    if reward_funcs is None:
        reward_funcs, reward_weights = reward_functions(spec, list(rows[0]))
    import datasets
    from datasets import Dataset
    from transformers import AutoTokenizer

    from rlcore.training.reporting import EventReporter, RunFiles, detach_console_printer

    datasets.disable_progress_bars()
    tokenizer = AutoTokenizer.from_pretrained(policy)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    rows = keep_short_prompts(rows, tokenizer, spec.max_prompt_length, str(spec.prompt_snapshot))
    spec.output_dir.mkdir(parents=True, exist_ok=True)
    (spec.output_dir / "spec.json").write_text(spec.model_dump_json(indent=1))
    files = RunFiles(spec.output_dir)
    stop = StopRequest().install()
    ckpt_dir = spec.output_dir / "checkpoints"
    reporter = EventReporter(files, stop, sample_every=spec.sample_every, samples_per_report=spec.samples_per_report)
    try:
        from trl import GRPOTrainer

        try:
            trainer = GRPOTrainer(model=policy, reward_funcs=list(reward_funcs),
                                  args=grpo_config(spec, ckpt_dir, reward_weights),
                                  train_dataset=Dataset.from_list(rows), processing_class=tokenizer,
                                  callbacks=[reporter], peft_config=lora_config(spec))
        except ValueError as exc:
            raise UserError(f"{spec.policy}: cannot set up GRPO: {exc}") from exc
        reporter.trainer = trainer
        detach_console_printer(trainer)
        try:
            trainer.train(resume_from_checkpoint=last_checkpoint(ckpt_dir) if spec.resume else None)
        except Exception as exc:
            if is_out_of_memory(exc):
                raise UserError(out_of_memory_message(spec, "max_completion_length")) from exc
            if is_non_finite_sampling(exc):
                raise UserError(non_finite_sampling_message(spec)) from exc
            raise
        if reporter.non_finite_step is not None:
            raise UserError(f"loss became NaN/inf at step {reporter.non_finite_step}; lower learning_rate "
                            f"(now {spec.learning_rate}) or check the reward for NaN values")
        if stop.requested:
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
