"""Reward throughput: how fast a RewardSpec scores, and what the TRL adapter costs inside a GRPO step.

Prints ONE JSON line:

- ``rules_per_s``: completions/s for a 5-criterion rule-only rubric, through the TRL reward function the
  adapter builds, on one core (the process is pinned to one CPU); ``rules_per_cpu_s`` the same per second of
  CPU time, which other load on the machine (``load_avg_1min``) does not dilute;
- ``full_spec_per_s``: completions/s for rules + verifier + overlong penalty + a small reward model
  (all-MiniLM-L6-v2 with a one-logit head, 22M parameters) on CPU, ``torch_threads`` threads;
- the same rewards inside real GRPO steps (tiny Qwen2-shaped policy, TRL GRPOTrainer, 32 completions a step),
  through ``build_reward_funcs`` and written by hand as plain TRL reward functions, both in the same steps
  (see ``grpo_figures``): ``reward_cpu_s_per_step_adapter`` / ``_hand``, ``grpo_step_cpu_s`` (the step with
  the hand-written rewards), ``adapter_overhead_pct`` = extra reward CPU time / step CPU time, and
  ``values_match`` (both give the same rewards on the same completions).

usage: python bench/reward_throughput.py [--n 20000] [--grpo-steps 8]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from rlcore.rewards import RewardSpec  # noqa: E402
from rlcore.rewards.trl_adapter import build_reward_funcs  # noqa: E402
from rlcore.training.tiny_models import build_minilm_reward_model  # noqa: E402

RUBRIC = {"name": "reasoning-format", "criteria": [
    {"name": "format", "weight": 2, "rule": {"kind": "format", "check": "think_answer_tags"}},
    {"name": "concludes", "rule": {"kind": "regex", "pattern": r"\b(therefore|thus|so)\b", "ignore_case": True}},
    {"name": "no_disclaimer", "rule": {"kind": "not_contains", "texts": ["as an ai", "i cannot"]}},
    {"name": "concise", "rule": {"kind": "length", "max": 120, "unit": "words"}},
    {"name": "no_urls", "critical": True, "veto_cap": 0.0, "rule": {"kind": "format", "check": "no_urls"}},
]}
WORDS = "the a of to and is it so we then number sum total step thus value answer check".split()


def synthetic_rows(n: int, seed: int = 0) -> list[dict]:
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        body = " ".join(rng.choices(WORDS, k=rng.randint(10, 160)))
        answer = rng.randint(0, 99)
        text = f"<think>{body}</think>\n<answer>{answer}</answer>" if rng.random() < 0.6 else f"{body} {answer}"
        if rng.random() < 0.1:
            text += " see https://example.com"
        if rng.random() < 0.1:
            text = "As an AI, " + text
        rows.append({"prompt": f"question {i % 64}", "completion": text, "answer": str(rng.randint(0, 99))})
    return rows


def rules_spec() -> RewardSpec:
    return RewardSpec(name="rules", components=[{"kind": "rubric_rules", "name": "rubric", "rubric": RUBRIC}])


def full_spec(rm_path: str | None) -> RewardSpec:
    components = [
        {"kind": "rubric_rules", "name": "rubric", "rubric": RUBRIC},
        {"kind": "verifier", "name": "correct", "reference_column": "answer", "mode": "numeric"},
        {"kind": "length_penalty", "name": "overlong", "max_length": 96, "cache_length": 32, "weight": 0.5},
    ]
    if rm_path:
        components.append({"kind": "reward_model", "name": "rm", "path": rm_path, "batch_size": 64,
                           "max_length": 256, "device": "cpu", "weight": 0.1})
    return RewardSpec(name="full", components=components)


def trl_batches(rows: list[dict], size: int):
    for start in range(0, len(rows), size):
        chunk = rows[start:start + size]
        yield ([r["prompt"] for r in chunk], [r["completion"] for r in chunk],
               {"answer": [r["answer"] for r in chunk]})


def completions_per_s(spec: RewardSpec, rows: list[dict], batch: int, cpu_time: bool = False) -> float:
    """Completions scored per second of wall time (or of this process's CPU time: ``cpu_time``)."""
    funcs, _ = build_reward_funcs(spec)
    batches = list(trl_batches(rows, batch))
    prompts, completions, columns = batches[0]
    for f in funcs:  # warm up (loads the reward model)
        f(prompts=prompts, completions=completions, completion_ids=None, **columns)
    clock = time.process_time if cpu_time else time.perf_counter
    start = clock()
    for prompts, completions, columns in batches:
        prompts, completions = list(prompts), list(completions)  # a fresh batch, as TRL passes each step
        for f in funcs:
            f(prompts=prompts, completions=completions, completion_ids=None, trainer_state=None,
              log_extra=None, log_metric=None, **columns)
    return len(rows) / (clock() - start)


# ---------------------------------------------------------------- hand-written equivalents

_THINK = re.compile(r"\s*<think>(?:(?!<think>).)*?</think>\s*<answer>(?:(?!<answer>).)*?</answer>\s*", re.DOTALL)
_CONCLUDES = re.compile(r"\b(therefore|thus|so)\b", re.IGNORECASE)
_URL = re.compile(r"(?i)\b(?:https?://|ftp://|www\.)\S")
_NUMBER = re.compile(r"[-+]?\d*\.?\d+")
_ANSWER = re.compile(r"<answer>(.*?)</answer>", re.DOTALL)


def rubric(prompts, completions, completion_ids=None, **kwargs):
    out = []
    for text in completions:
        low = text.lower()
        if _URL.search(text):  # the critical criterion failed: capped at 0
            out.append(0.0)
            continue
        scores = [(2, _THINK.fullmatch(text) is not None), (1, _CONCLUDES.search(text) is not None),
                  (1, "as an ai" not in low and "i cannot" not in low), (1, len(text.split()) <= 120), (1, True)]
        out.append(sum(w * s for w, s in scores) / 6)
    return out


def correct(prompts, completions, completion_ids=None, answer=None, **kwargs):
    out = []
    for text, ref in zip(completions, answer):
        tags = _ANSWER.findall(text)
        numbers = _NUMBER.findall(tags[-1] if tags else text)
        out.append(1.0 if numbers and float(numbers[-1]) == float(ref) else 0.0)
    return out


def overlong(prompts, completions, completion_ids=None, **kwargs):
    out = []
    for ids in completion_ids:
        n = len(ids)
        out.append(0.0 if n <= 64 else -1.0 if n >= 96 else -(n - 64) / 32)
    return out


class Timed:
    """Wraps a reward function under a given name and adds up the CPU time spent in it."""

    def __init__(self, func, clock: list[float], name: str | None = None):
        self.func, self.clock = func, clock
        self.__name__ = name or getattr(func, "__name__")

    def __call__(self, *args, **kwargs):
        start = time.process_time()
        try:
            return self.func(*args, **kwargs)
        finally:
            self.clock[0] += time.process_time() - start


def grpo_figures(steps: int) -> dict:
    """Both reward sets inside the same GRPO steps: the adapter's functions with their weights (they drive
    training) and the hand-written ones with weight 0 (scored, logged, not optimised), so both score exactly
    the same completions in the same step. Run twice, each set first once; times are CPU seconds, which other
    load on the machine does not dilute."""
    import torch
    from datasets import Dataset
    from transformers import AutoTokenizer, TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    from rlcore.training.tiny_models import build_tiny_causal_lm

    work = Path(tempfile.mkdtemp())
    policy = build_tiny_causal_lm(work / "policy")
    rows = [{"prompt": f"w{i} w{i + 1} w{i + 2} question", "answer": str(i % 10)} for i in range(64)]
    spec = full_spec(None)

    class StepClock(TrainerCallback):
        def __init__(self):
            self.cpu, self.wall, self.started = [], [], None

        def on_step_begin(self, args, state, control, **kwargs):
            self.started = (time.process_time(), time.perf_counter())

        def on_step_end(self, args, state, control, **kwargs):
            self.cpu.append(time.process_time() - self.started[0])
            self.wall.append(time.perf_counter() - self.started[1])

    def run(adapter_first: bool):
        adapter_clock, hand_clock = [0.0], [0.0]
        funcs, weights = build_reward_funcs(spec)
        ours = [Timed(f, adapter_clock) for f in funcs]
        hand = [Timed(f, hand_clock, f"hand_{f.__name__}") for f in (rubric, correct, overlong)]
        reward_funcs = ours + hand if adapter_first else hand + ours
        reward_weights = weights + [0.0] * 3 if adapter_first else [0.0] * 3 + weights
        clock = StepClock()
        torch.manual_seed(0)
        config = GRPOConfig(output_dir=str(work / "out"), max_steps=steps, per_device_train_batch_size=32,
                            num_generations=8, max_completion_length=48, logging_steps=1000, report_to="none",
                            reward_weights=reward_weights, use_cpu=True, disable_tqdm=True, save_strategy="no", seed=0)
        trainer = GRPOTrainer(model=str(policy), reward_funcs=reward_funcs, args=config,
                              train_dataset=Dataset.from_list(rows),
                              processing_class=AutoTokenizer.from_pretrained(policy), callbacks=[clock])
        trainer.train()
        return sum(clock.cpu), min(clock.wall), adapter_clock[0], hand_clock[0]

    runs = [run(adapter_first=True), run(adapter_first=False)]
    step_cpu = sum(r[0] for r in runs) / (2 * steps)
    step_wall = min(r[1] for r in runs)
    adapter = sum(r[2] for r in runs) / (2 * steps)
    hand = sum(r[3] for r in runs) / (2 * steps)

    # both sets give the same rewards on the same completions
    sample = synthetic_rows(256, seed=1)
    prompts, completions = [r["prompt"] for r in sample], [r["completion"] for r in sample]
    ids = [[0] * len(c.split()) for c in completions]
    answers = [r["answer"] for r in sample]
    funcs, _ = build_reward_funcs(spec)
    ours = [f(prompts=prompts, completions=completions, completion_ids=ids, answer=answers) for f in funcs]
    theirs = [f(prompts=prompts, completions=completions, completion_ids=ids, answer=answers)
              for f in (rubric, correct, overlong)]
    match = all(abs(a - b) < 1e-9 for x, y in zip(ours, theirs) for a, b in zip(x, y))

    step_hand_cpu = step_cpu - adapter  # the step as it would be with the hand-written rewards only
    return {
        "grpo_steps_timed": 2 * steps,
        "grpo_completions_per_step": 32,
        "grpo_step_cpu_s": round(step_hand_cpu, 4),
        "grpo_step_wall_s_fastest": round(step_wall, 4),
        "reward_cpu_s_per_step_hand": round(hand, 6),
        "reward_cpu_s_per_step_adapter": round(adapter, 6),
        "adapter_overhead_pct": round(100 * (adapter - hand) / step_hand_cpu, 3),
        "values_match": match,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=20000, help="completions for the rule-only figure")
    parser.add_argument("--n-full", type=int, default=1024, help="completions for the full-spec figure")
    parser.add_argument("--grpo-steps", type=int, default=6, help="GRPO steps per run (two runs)")
    args = parser.parse_args()

    # libraries print (the Rust tokenizer trainer straight to file descriptor 1): send all of it to stderr,
    # so that stdout carries the one JSON line only
    sys.stdout.flush()
    json_out = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})  # one core for the rule-only figure
    rows = synthetic_rows(args.n)
    rules = completions_per_s(rules_spec(), rows, batch=256)
    rules_cpu = completions_per_s(rules_spec(), rows, batch=256, cpu_time=True)
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, set(range(os.cpu_count() or 1)))

    import torch

    with tempfile.TemporaryDirectory() as tmp:
        rm = str(build_minilm_reward_model(Path(tmp) / "rm"))
        full = completions_per_s(full_spec(rm), synthetic_rows(args.n_full, seed=2), batch=256)
        full_no_rm = completions_per_s(full_spec(None), synthetic_rows(args.n_full * 4, seed=2), batch=256)
    figures = {
        "bench": "reward_throughput",
        "rules_per_s": round(rules),
        "rules_per_cpu_s": round(rules_cpu),
        "load_avg_1min": round(os.getloadavg()[0], 2),
        "rules_criteria": len(RUBRIC["criteria"]),
        "rules_cores": 1,
        "full_spec_per_s": round(full, 1),
        "full_spec_without_rm_per_s": round(full_no_rm),
        "reward_model": "all-MiniLM-L6-v2 + 1-logit head (22M params), max_length 256",
        "torch_threads": torch.get_num_threads(),
        **grpo_figures(args.grpo_steps),
        "python": sys.version.split()[0],
    }
    print(json.dumps(figures), file=json_out, flush=True)


if __name__ == "__main__":
    main()
