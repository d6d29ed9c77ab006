"""Plain TRL vs ``python -m rlcore train`` on one GPU, with a Qwen2.5-0.5B-shaped random-weight model.

Mirrors /work/shared/bench/trl_anchor.py (same model shape, tokenizer recipe, batch sizes, bf16): the
model is built from a config with random weights (throughput does not depend on the weights) and saved
to a temporary directory, then each workload runs twice as child processes on the same GPU:

- reward model: a preference snapshot of random-word texts, RewardTrainer vs ``train reward-model``;
- GRPO: random-word prompts, a length reward, GRPOTrainer vs ``train grpo`` (same reward functions).

Figures are steady-state, timed as the anchor times them: each run takes a few warm-up steps more than it
measures (reward model 3, GRPO 1; CUDA kernels, allocator and compile caches warm up there), and the clock
runs from the end of the last warm-up step to the end of the last step. Both variants print a progress line
at the end of every step (rlcore's own, and the same line from a callback in the plain script), and the bench
timestamps those lines as they arrive, so launching, loading and saving are outside the window for both.
Tokens/s counts real tokens of both sides (reward model) or generated completion tokens (GRPO); MFU is
6 * params * tokens/s / peak bf16 (PEAK_TFLOPS env, default 989 for an H100 SXM). ``train_runtime_s`` is
TRL's whole-run figure, kept for reference. ``--anchor`` also runs ../shared/bench/trl_anchor.py (or $TRL_ANCHOR) first,
in the same invocation.
On a CPU it runs a tiny model instead: a dry run of the code paths, not a measurement.

usage: python bench/gpu_train.py [rm|grpo|all] [--anchor] [--rm-steps 25] [--grpo-steps 4]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PEAK_BF16 = float(os.environ.get("PEAK_TFLOPS", "989")) * 1e12
RM_WARM, GRPO_WARM = 3, 1  # untimed warm-up steps, as in the anchor

# Both plain scripts print rlcore's progress line at the end of each step, so both are timed alike.
PROGRESS = """
import json, sys
from transformers import TrainerCallback
class Progress(TrainerCallback):
    def on_step_end(self, args, state, control, **kwargs):
        print(json.dumps({"kind": "progress", "step": state.global_step, "total": state.max_steps}), flush=True)
"""

PLAIN_RM = PROGRESS + """
from datasets import Dataset
from transformers import AutoTokenizer
from trl import RewardConfig, RewardTrainer
spec = json.load(open(sys.argv[1]))
rows = [json.loads(l) for l in open(spec["preference_snapshot"])]
cuda = spec["device"] != "cpu"
args = RewardConfig(output_dir=spec["output_dir"] + "/checkpoints", max_steps=spec["max_steps"], seed=spec["seed"],
    per_device_train_batch_size=spec["per_device_train_batch_size"], learning_rate=spec["learning_rate"],
    logging_steps=spec["logging_steps"], save_strategy="no", max_length=spec["max_length"], bf16=cuda, use_cpu=not cuda,
    gradient_checkpointing=spec["gradient_checkpointing"], report_to="none", disable_tqdm=True)
t = RewardTrainer(model=spec["backbone"], args=args, train_dataset=Dataset.from_list(rows),
                  processing_class=AutoTokenizer.from_pretrained(spec["backbone"]), callbacks=[Progress()])
print(json.dumps({"train_runtime": t.train().metrics["train_runtime"]}))
"""

PLAIN_GRPO = PROGRESS + """
from datasets import Dataset
from transformers import AutoTokenizer
from trl import GRPOConfig, GRPOTrainer
from rlcore.rewards import RewardSpec
from rlcore.rewards.trl_adapter import build_reward_funcs
from rlcore.training.presets import grpo_preset
spec = json.load(open(sys.argv[1]))
rows = [json.loads(l) for l in open(spec["prompt_snapshot"])]
funcs, weights = build_reward_funcs(RewardSpec.model_validate(spec["reward_spec"]))
cuda = spec["device"] != "cpu"
args = GRPOConfig(output_dir=spec["output_dir"] + "/checkpoints", max_steps=spec["max_steps"], seed=spec["seed"],
    per_device_train_batch_size=spec["per_device_train_batch_size"],
    gradient_accumulation_steps=spec["gradient_accumulation_steps"], num_generations=spec["num_generations"],
    max_completion_length=spec["max_completion_length"], learning_rate=spec["learning_rate"], logging_steps=1,
    save_strategy="no", bf16=cuda, use_cpu=not cuda, gradient_checkpointing=spec["gradient_checkpointing"],
    reward_weights=weights, report_to="none", disable_tqdm=True, **grpo_preset(spec["preset"]))
t = GRPOTrainer(model=spec["policy"], reward_funcs=funcs, args=args, train_dataset=Dataset.from_list(rows),
                processing_class=AutoTokenizer.from_pretrained(spec["policy"]), callbacks=[Progress()])
out = t.train()
lengths = {h["step"]: h["completions/mean_length"] for h in t.state.log_history if "completions/mean_length" in h}
print(json.dumps({"train_runtime": out.metrics["train_runtime"], "mean_lengths": lengths}))
"""


def emit(**fields) -> None:
    print(json.dumps(fields), flush=True)


def build_tokenizer():
    """The anchor's tokenizer recipe: byte-level BPE trained on random words, eos and pad specials."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    rng = random.Random(0)
    words = [f"w{i}" for i in range(4000)]
    text = [" ".join(rng.choices(words, k=64)) for _ in range(400)]
    tok = Tokenizer(models.BPE(unk_token=None))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(text, trainers.BpeTrainer(vocab_size=8000, special_tokens=["<|endoftext|>", "<|pad|>"]))
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|endoftext|>", pad_token="<|pad|>")
    fast.padding_side = "left"
    return fast, words


def qwen05_config(tok, cuda: bool):
    """Qwen2.5-0.5B's shape on a GPU (as in the anchor); two tiny layers on CPU."""
    from transformers import Qwen2Config

    size = dict(hidden_size=896, intermediate_size=4864, num_hidden_layers=24, num_attention_heads=14) if cuda \
        else dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=2)
    return Qwen2Config(vocab_size=151936, **size, num_key_value_heads=2, max_position_embeddings=32768,
                       tie_word_embeddings=True, rope_theta=1e6, pad_token_id=tok.pad_token_id,
                       eos_token_id=tok.eos_token_id, bos_token_id=None)


def build_models(work: Path, cuda: bool):
    """Save a Qwen2.5-0.5B-shaped (tiny on CPU) causal LM and sequence classifier with the anchor's tokenizer."""
    import torch
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification

    tok, words = build_tokenizer()
    config = qwen05_config(tok, cuda)
    dtype = torch.bfloat16 if cuda else torch.float32
    torch.manual_seed(0)  # the same random weights every run: a failure on them can be reproduced
    policy, rm = work / "policy", work / "rm"
    AutoModelForCausalLM.from_config(config, dtype=dtype).save_pretrained(policy)
    tok.save_pretrained(policy)
    config.num_labels = 1
    model = AutoModelForSequenceClassification.from_config(config, dtype=dtype)
    params = sum(p.numel() for p in model.parameters())
    model.save_pretrained(rm)
    tok.padding_side = "right"
    tok.save_pretrained(rm)
    return tok, words, policy, rm, params


class RunFailed(Exception):
    """One variant's run failed; the bench reports it and goes on with the other variant."""


def run(command: list[str]) -> tuple[float, str, dict[int, float]]:
    """Run a child to the end; its wall time, stdout, and when each step's progress line arrived."""
    start = time.perf_counter()
    step_ends: dict[int, float] = {}
    lines = []
    with subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) as child:
        stderr = []
        drain = threading.Thread(target=lambda: stderr.extend(child.stderr), daemon=True)
        drain.start()
        for line in child.stdout:
            now = time.perf_counter()
            lines.append(line)
            if line.startswith('{"kind": "progress"'):
                step_ends[json.loads(line)["step"]] = now
        child.wait()
        drain.join()
    if child.returncode != 0:
        raise RunFailed(f"{' '.join(command[-4:])} failed:\n{''.join(stderr)[-4000:]}")
    return time.perf_counter() - start, "".join(lines), step_ends


def runtime_of(variant: str, stdout: str, output_dir: Path) -> dict:
    if variant == "plain":
        result = json.loads([line for line in stdout.splitlines() if line.startswith('{"train_runtime"')][-1])
        result["mean_lengths"] = {int(k): v for k, v in result.get("mean_lengths", {}).items()}
        return result
    metrics = [json.loads(line) for line in (output_dir / "metrics.jsonl").read_text().splitlines()]
    return {"train_runtime": [m["value"] for m in metrics if m["name"] == "train_runtime"][-1],
            "mean_lengths": {m["step"]: m["value"] for m in metrics if m["name"] == "completions/mean_length"}}


def steady_window(step_ends: dict[int, float], warm: int) -> tuple[int, float]:
    """(steps, seconds) from the end of step ``warm`` to the end of the last step."""
    last = max(step_ends)
    if warm not in step_ends or last <= warm:
        raise RunFailed(f"no steady-state window: progress lines for steps {sorted(step_ends)}, warm-up {warm}")
    return last - warm, step_ends[last] - step_ends[warm]


def compare(name: str, work: Path, spec: dict, plain: str, command: str, warm: int, figures) -> None:
    (work / f"plain_{name}.py").write_text(plain)
    for variant in ("plain", "rlcore"):
        out = work / f"{name}-{variant}"
        spec_path = work / f"{name}-{variant}.json"
        spec_path.write_text(json.dumps(dict(spec, output_dir=str(out))))
        argv = ([sys.executable, str(work / f"plain_{name}.py"), str(spec_path)] if variant == "plain" else
                [sys.executable, "-m", "rlcore", "train", command, str(spec_path)])
        try:
            wall, stdout, step_ends = run(argv)
            steps, seconds = steady_window(step_ends, warm)
        except RunFailed as exc:
            # one variant failing (e.g. NaN sampling on random weights) must not cost the other one's figure
            emit(bench=f"gpu_train_{name}", variant=variant, error=str(exc)[-1500:])
            continue
        emit(bench=f"gpu_train_{name}", variant=variant, wall_s=round(wall, 2), steps=steps,
             s_per_step=round(seconds / steps, 4), **figures(runtime_of(variant, stdout, out), warm, steps, seconds))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("which", nargs="?", default="all", choices=["rm", "grpo", "all"])
    parser.add_argument("--anchor", action="store_true", help="also run ../shared/bench/trl_anchor.py")
    parser.add_argument("--rm-steps", type=int, default=25)
    parser.add_argument("--grpo-steps", type=int, default=4)
    options = parser.parse_args()

    import torch
    import transformers
    import trl

    cuda = torch.cuda.is_available()
    emit(torch=torch.__version__, transformers=transformers.__version__, trl=trl.__version__,
         gpu=torch.cuda.get_device_name(0) if cuda else "cpu (dry run, not a measurement)")
    if options.anchor:
        anchor = Path(os.environ.get("TRL_ANCHOR", ROOT.parent / "shared" / "bench" / "trl_anchor.py"))
        if anchor.is_file():
            subprocess.run([sys.executable, str(anchor), options.which], cwd=ROOT, check=True)
        else:
            emit(anchor="not found", path=str(anchor))
    work = Path(tempfile.mkdtemp(prefix="rlcore-gpu-"))
    tok, words, policy, rm, params = build_models(work, cuda)
    random.seed(0)
    batch, rm_steps = (16, options.rm_steps) if cuda else (4, 3)

    def mfu(tokens_per_s: float) -> float | None:
        return round(6 * params * tokens_per_s / PEAK_BF16, 4) if cuda else None

    if options.which in ("rm", "all"):
        # as many rows as the anchor: a few batches beyond the steps run
        rows = [{"prompt": " ".join(random.choices(words, k=random.randint(32, 256) // 2)),
                 "chosen": " " + " ".join(random.choices(words, k=random.randint(32, 512) // 2)),
                 "rejected": " " + " ".join(random.choices(words, k=random.randint(32, 512) // 2))}
                for _ in range(batch * (rm_steps + 5))]
        snapshot = work / "labels.jsonl"
        snapshot.write_text("".join(json.dumps(r) + "\n" for r in rows))
        tokens = sum(len(tok(r["prompt"] + r["chosen"])["input_ids"]) + len(tok(r["prompt"] + r["rejected"])["input_ids"])
                     for r in rows)
        tokens_per_step = tokens / (len(rows) / batch)
        spec = {"backbone": str(rm), "preference_snapshot": str(snapshot), "max_steps": rm_steps + RM_WARM,
                "seed": 0, "per_device_train_batch_size": batch, "learning_rate": 1e-5, "logging_steps": 5,
                "save_steps": 10**6, "max_length": 1024, "gradient_checkpointing": cuda,
                "device": "cuda" if cuda else "cpu", "eval_fraction": 0.02}

        def rm_figures(r: dict, warm: int, steps: int, seconds: float) -> dict:
            tps = tokens_per_step * steps / seconds
            return dict(tokens_per_s=round(tps), mfu=mfu(tps), params=params,
                        train_runtime_s=round(r["train_runtime"], 2))

        compare("reward_model", work, spec, PLAIN_RM, "reward-model", RM_WARM, rm_figures)

    if options.which in ("grpo", "all"):
        prompts_per_step, gens, max_new = (16, 8, 256) if cuda else (4, 4, 16)
        prompts = work / "prompts.jsonl"
        prompts.write_text("".join(json.dumps({"prompt": " ".join(random.choices(words, k=random.randint(16, 96)))})
                                   + "\n" for _ in range(prompts_per_step * (options.grpo_steps + 2))))
        reward = {"name": "length", "components": [
            {"kind": "length_penalty", "name": "overlong", "max_length": max_new, "cache_length": max_new // 2}]}
        spec = {"policy": str(policy), "prompt_snapshot": str(prompts), "reward_spec": reward, "preset": "dr_grpo",
                "max_steps": options.grpo_steps + GRPO_WARM, "seed": 0,
                "per_device_train_batch_size": prompts_per_step * gens // 4,
                "gradient_accumulation_steps": 4, "num_generations": gens, "max_completion_length": max_new,
                "learning_rate": 1e-6, "logging_steps": 1, "save_steps": 10**6, "gradient_checkpointing": cuda,
                "device": "cuda" if cuda else "cpu", "max_prompt_length": None, "sample_every": 1}

        def grpo_figures(r: dict, warm: int, steps: int, seconds: float) -> dict:
            generated = sum(length for step, length in r["mean_lengths"].items() if step > warm) * prompts_per_step * gens
            return dict(completion_tokens_per_s=round(generated / seconds), mfu=mfu(generated / seconds),
                        mean_completion_length=round(generated / steps / prompts_per_step / gens, 1),
                        train_runtime_s=round(r["train_runtime"], 2))

        compare("grpo", work, spec, PLAIN_GRPO, "grpo", GRPO_WARM, grpo_figures)


if __name__ == "__main__":
    main()
