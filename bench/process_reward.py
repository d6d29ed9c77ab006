"""Process-reward scoring inside a GRPO step: what rlcore adds around the PRM's own forward pass.

Builds a tiny random Qwen2-shaped token classifier (rlcore/training/tiny_models.py), then for a GRPO-sized
batch (64 completions of 4-8 steps) times, best of --repeats:

- ``forward_s``: the model's own forward over the same token ids, already built and padded (the floor);
- ``component_s``: the ``process_reward_model`` component as a GRPO step calls it through the reward
  engine: split each completion into steps (RE2), tokenise with the separator after each step, forward,
  read P(good) at the separators, aggregate (min).

Prints one JSON line {"forward_s", "component_s", "overhead_ratio", "completions", "steps", "target"}.
Target (CPU, tiny model): component_s <= 1.05 x forward_s + the tokenisation the forward needs anyway
(``tokenize_s``, reported), i.e. ``overhead_ratio = (component_s - tokenize_s) / forward_s <= 1.05``: the median
over rounds that time the three back to back, in CPU seconds of this process (``ratio_range`` the lowest and
highest round; the ``*_s`` are the best of each).

usage: python bench/process_reward.py [--completions 64] [--repeats 21]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--completions", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=21)
    args = parser.parse_args()

    import torch
    from transformers import AutoModelForTokenClassification

    from rlcore.rewards.engine import RewardEngine, make_batch
    from rlcore.rewards.spec import RewardSpec
    from rlcore.training import tiny_models
    from rlcore.training.prm import predict_steps, tokenize_row
    from rlcore.steps import StepwiseRow

    torch.set_num_threads(1)  # the 2-core machine is shared; one thread keeps the two timings comparable
    directory = Path(tempfile.mkdtemp(prefix="bench-prm-"))
    tok = tiny_models.build_tokenizer(directory)
    config = tiny_models.tiny_qwen2_config(tok)
    config.num_labels = 2
    torch.manual_seed(0)
    AutoModelForTokenClassification.from_config(config).save_pretrained(str(directory))

    rng = random.Random(0)
    completions = ["\n".join(" ".join(rng.choices(tiny_models.WORDS, k=rng.randint(4, 10)))
                             for _ in range(rng.randint(4, 8))) for _ in range(args.completions)]
    prompts = [" ".join(rng.choices(tiny_models.WORDS, k=8)) for _ in completions]
    spec = RewardSpec(name="bench", components=[{"kind": "process_reward_model", "name": "steps",
                                                 "path": str(directory), "batch_size": 16, "device": "cpu"}])
    engine = RewardEngine(spec)
    engine.load()
    scorer = engine.scorers[0]

    def component() -> None:
        engine.component_values(make_batch(prompts, completions))

    def tokenise():
        # the floor: one batched tokenizer call over every prompt and step, which any PRM forward needs
        scorer._tokenizer(prompts + [s for c in completions for s in c.split("\n")], add_special_tokens=False)
        return [tokenize_row(StepwiseRow(p, c.split("\n"), [True] * len(c.split("\n"))), scorer._tokenizer,
                             scorer._sep_ids) for p, c in zip(prompts, completions)]

    encoded = sorted(tokenise(), key=lambda e: len(e["input_ids"]))
    pad = scorer._tokenizer.pad_token_id
    batches = []
    for start in range(0, len(encoded), 16):
        chunk = encoded[start:start + 16]
        width = max(len(e["input_ids"]) for e in chunk)
        batches.append((torch.tensor([e["input_ids"] + [pad] * (width - len(e["input_ids"])) for e in chunk]),
                        torch.tensor([[1] * len(e["input_ids"]) + [0] * (width - len(e["input_ids"]))
                                      for e in chunk])))

    def forward() -> None:
        with torch.no_grad():
            for ids, mask in batches:
                scorer._model(input_ids=ids, attention_mask=mask)

    def timed(fn) -> float:
        # CPU time of this process (torch runs one thread here): waiting for a core on the shared machine is
        # not counted, where wall time swung a round's ratio 0.4-3x
        t0 = time.process_time()
        fn()
        return time.process_time() - t0

    def tokenise_floor() -> None:
        scorer._tokenizer(prompts + [s for c in completions for s in c.split("\n")], add_special_tokens=False)

    # The three are timed back to back in each round and the ratio taken per round, so a change of load on the
    # shared machine moves all three of a round alike (best-of each, timed seconds apart, swung 0.6-1.5x)
    for fn in (forward, tokenise_floor, component):
        fn()  # warm-up
    rounds = [(timed(forward), timed(tokenise_floor), timed(component)) for _ in range(args.repeats)]
    ratios = sorted((c - t) / f for f, t, c in rounds)
    ratio = statistics.median(ratios)
    forward_s, tokenize_s, component_s = (min(r[i] for r in rounds) for i in range(3))
    print(json.dumps({"forward_s": round(forward_s, 5), "tokenize_s": round(tokenize_s, 5),
                      "component_s": round(component_s, 5), "overhead_ratio": round(ratio, 3),
                      "ratio_range": [round(ratios[0], 3), round(ratios[-1], 3)], "rounds": len(rounds),
                      "completions": len(completions), "steps": sum(c.count("\n") + 1 for c in completions),
                      "target": "overhead_ratio <= 1.05", "ok": ratio <= 1.05,
                      "load_avg_1m": round(os.getloadavg()[0], 2)}))


if __name__ == "__main__":
    main()
