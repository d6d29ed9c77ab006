"""Overhead of ``python -m rlcore train`` over plain TRL, on CPU, in one run.

The same reward-model training (the shipped MiniLM backbone, a synthetic preference snapshot) and the
same GRPO steps (a tiny random Qwen2-shaped policy) run twice each, as child processes:

- plain: a short script calling TRL's RewardTrainer / GRPOTrainer directly with the same settings
  (it evaluates on the held-out pairs and saves the model, as rlcore does);
- rlcore: ``python -m rlcore train reward-model|grpo SPEC.json``.

Both GRPO runs use the same reward functions (built from the same RewardSpec by
``rlcore.rewards.trl_adapter``), so the ratio measures the training wrapper alone. Each variant runs
``--repeats`` times, alternating, and the fastest wall time counts. Prints JSON lines; target ratio <= 1.05.

usage: python bench/training_overhead.py [--repeats 2] [--rm-steps 30] [--grpo-steps 20] [--presets grpo ...]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

REWARD_SPEC = {"name": "bench", "components": [
    {"kind": "verifier", "name": "agrees", "reference_column": "reference", "mode": "exact", "weight": 1.0},
    {"kind": "length_penalty", "name": "overlong", "max_length": 24, "cache_length": 8, "weight": 0.5}]}

PLAIN_RM = """
import json, sys
from datasets import Dataset
from transformers import AutoTokenizer
from trl import RewardConfig, RewardTrainer
from rlcore.training.snapshot import preference_rows, split_held_out
spec = json.load(open(sys.argv[1]))
train, held = split_held_out(preference_rows(spec["preference_snapshot"], False), spec["eval_fraction"], spec["seed"])
tok = AutoTokenizer.from_pretrained(spec["backbone"])
args = RewardConfig(output_dir=spec["output_dir"] + "/checkpoints", seed=spec["seed"], max_steps=spec["max_steps"],
    learning_rate=spec["learning_rate"], per_device_train_batch_size=spec["per_device_train_batch_size"],
    logging_steps=spec["logging_steps"], save_steps=spec["save_steps"], save_total_limit=2, max_length=spec["max_length"],
    eos_token=tok.sep_token, use_cpu=True, bf16=False, gradient_checkpointing=False, report_to="none", disable_tqdm=True)
trainer = RewardTrainer(model=spec["backbone"], args=args, train_dataset=Dataset.from_list(train),
                        eval_dataset=Dataset.from_list(held), processing_class=tok)
print("TRAIN_RUNTIME", trainer.train().metrics["train_runtime"])
print(trainer.evaluate())
trainer.save_model(spec["output_dir"] + "/model")
"""

PLAIN_GRPO = """
import json, sys
from datasets import Dataset
from transformers import AutoTokenizer
from trl import GRPOConfig, GRPOTrainer
from rlcore.rewards import RewardSpec
from rlcore.rewards.trl_adapter import build_reward_funcs
from rlcore.training.presets import grpo_preset, preset_steps_per_generation  # the preset's TRL fields, as written
spec = json.load(open(sys.argv[1]))
rows = [json.loads(line) for line in open(spec["prompt_snapshot"])]
funcs, weights = build_reward_funcs(RewardSpec.model_validate(spec["reward_spec"]))
args = GRPOConfig(output_dir=spec["output_dir"] + "/checkpoints", seed=spec["seed"], max_steps=spec["max_steps"],
    learning_rate=spec["learning_rate"], per_device_train_batch_size=spec["per_device_train_batch_size"],
    num_generations=spec["num_generations"], max_completion_length=spec["max_completion_length"],
    logging_steps=spec["logging_steps"], save_steps=spec["save_steps"], save_total_limit=2, reward_weights=weights,
    steps_per_generation=preset_steps_per_generation(spec["preset"], 1), **grpo_preset(spec["preset"]),
    use_cpu=True, bf16=False, gradient_checkpointing=False, report_to="none", disable_tqdm=True)
trainer = GRPOTrainer(model=spec["policy"], reward_funcs=funcs, args=args, train_dataset=Dataset.from_list(rows),
                      processing_class=AutoTokenizer.from_pretrained(spec["policy"]))
print("TRAIN_RUNTIME", trainer.train().metrics["train_runtime"])
trainer.save_model(spec["output_dir"] + "/model")
"""


def emit(**fields) -> None:
    print(json.dumps(fields), flush=True)


def timed(command: list[str], output_dir: Path) -> tuple[float, float]:
    """Wall seconds of a training child, and the seconds of TRL's own training loop (train_runtime)."""
    start = time.perf_counter()
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed:\n{done.stderr[-3000:]}")
    loop = [float(line.split()[1]) for line in done.stdout.splitlines() if line.startswith("TRAIN_RUNTIME")]
    if not loop:
        loop = [m["value"] for m in map(json.loads, (output_dir / "metrics.jsonl").read_text().splitlines())
                if m["name"] == "train_runtime"]
    return seconds, loop[-1]


def compare(name: str, work: Path, spec: dict, plain_script: str, rlcore_command: str, repeats: int) -> None:
    script = work / f"plain_{name}.py"
    script.write_text(plain_script)
    best = {"plain": float("inf"), "rlcore": float("inf")}
    loop = {"plain": float("inf"), "rlcore": float("inf")}
    for r in range(repeats):
        for variant in ("plain", "rlcore") if r % 2 == 0 else ("rlcore", "plain"):
            run_spec = dict(spec, output_dir=str(work / f"{name}-{variant}-{r}"))
            spec_path = work / f"{name}-{variant}-{r}.json"
            spec_path.write_text(json.dumps(run_spec))
            command = ([sys.executable, str(script), str(spec_path)] if variant == "plain" else
                       [sys.executable, "-m", "rlcore", "train", rlcore_command, str(spec_path)])
            wall, train_loop = timed(command, Path(run_spec["output_dir"]))
            best[variant], loop[variant] = min(best[variant], wall), min(loop[variant], train_loop)
    emit(bench=f"training_overhead_{name}", plain_s=round(best["plain"], 2), rlcore_s=round(best["rlcore"], 2),
         ratio=round(best["rlcore"] / best["plain"], 3), target=1.05,
         plain_train_loop_s=round(loop["plain"], 2), rlcore_train_loop_s=round(loop["rlcore"], 2),
         train_loop_ratio=round(loop["rlcore"] / loop["plain"], 3), steps=spec["max_steps"], repeats=repeats)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--rm-steps", type=int, default=30)
    parser.add_argument("--grpo-steps", type=int, default=20)
    parser.add_argument("--presets", nargs="+", default=["grpo", "dr_grpo", "dapo", "gspo"],
                        help="GRPO presets to compare (each against plain TRL with the same GRPOConfig fields)")
    options = parser.parse_args()

    from rlcore.training import tiny_models

    work = Path(tempfile.mkdtemp(prefix="rlcore-overhead-"))
    labels = tiny_models.write_keyword_preferences(work / "labels.jsonl", 200)
    rm_spec = {"backbone": str(tiny_models.minilm_path()), "preference_snapshot": str(labels), "seed": 42,
               "eval_fraction": 0.1, "max_steps": options.rm_steps, "learning_rate": 5e-5,
               "per_device_train_batch_size": 8, "logging_steps": 1, "save_steps": 10, "max_length": 64,
               "device": "cpu"}
    compare("reward_model", work, rm_spec, PLAIN_RM, "reward-model", options.repeats)

    policy = tiny_models.build_tiny_causal_lm(work / "policy")
    prompts = tiny_models.write_prompts(work / "prompts.jsonl", 64)
    for preset in options.presets:
        grpo_spec = {"policy": str(policy), "prompt_snapshot": str(prompts), "reward_spec": REWARD_SPEC, "seed": 42,
                 "preset": preset, "max_steps": options.grpo_steps, "learning_rate": 1e-5,
                 "per_device_train_batch_size": 8, "num_generations": 4, "max_completion_length": 32,
                 "logging_steps": 1, "save_steps": 10, "sample_every": 5, "device": "cpu", "max_prompt_length": None}
        compare(f"grpo:{preset}", work, grpo_spec, PLAIN_GRPO, "grpo", options.repeats)


if __name__ == "__main__":
    main()
