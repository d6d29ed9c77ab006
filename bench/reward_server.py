"""Reward server throughput: completions/s and p50/p99 latency, 16 concurrent clients on loopback.

Two specs: rule-only (rubric rules + verifier + length penalty, group z-score) and the same rules plus a
MiniLM reward model (the shipped all-MiniLM-L6-v2 with an untrained 1-logit head: the cost of the forward
pass is what is measured, not the quality). Each is served by a real ``python -m rlcore reward serve``
child; the clients are separate processes holding one keep-alive connection each and sending the same
pre-encoded batch, so the figure is the server's. The model spec is compared with in-process scoring of
the same batches (``RewardEngine.score_batch``, one after another) in this process.

    .venv/bin/python bench/reward_server.py [--seconds 10] [--clients 16] [--batch 64] [--only rules|model]

Targets (issue 15): rule-only >= 20,000 completions/s with batches of 64; the model spec within 10 % of
in-process scoring.
"""

from __future__ import annotations

import argparse
import http.client
import json
import multiprocessing
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

RULES = [
    {"kind": "rubric_rules", "name": "polite", "rubric": {"name": "r", "criteria": [
        {"name": "thanks", "rule": {"kind": "contains", "texts": ["thanks"]}},
        {"name": "no_url", "rule": {"kind": "regex", "pattern": "https?://", "must_match": False}}]}},
    {"kind": "verifier", "name": "correct", "reference_column": "answer", "mode": "numeric"},
    {"kind": "length_penalty", "name": "overlong", "max_length": 64, "cache_length": 16, "unit": "words",
     "weight": 0.5},
]


def batch_rows(n: int) -> list[dict]:
    """GRPO-like: 8 completions per prompt, a numeric answer, some with 'thanks'."""
    return [{"prompt": f"Question {i // 8}: what is {i // 8} + {i % 5}?",
             "completion": ("thanks! " if i % 3 == 0 else "") + f"Let me think. The answer is {i // 8 + i % 5}.",
             "answer": str(i // 8 + (i % 5 if i % 4 else 0))} for i in range(n)]


def start_server(spec_path: Path, max_rows: int) -> tuple[subprocess.Popen, str]:
    child = subprocess.Popen([sys.executable, "-m", "rlcore", "reward", "serve", "--spec", str(spec_path),
                              "--port", "0", "--max-rows", str(max_rows), "--log-seconds", "3600"],
                             cwd=ROOT, stdout=subprocess.PIPE, text=True,
                             env={**os.environ, "PYTHONPATH": str(ROOT), "TOKENIZERS_PARALLELISM": "false"})
    for line in child.stdout:
        if line.startswith("{"):
            event = json.loads(line)
            if event.get("type") == "reward_server":
                return child, event["path"]
    raise RuntimeError(f"the server exited with {child.wait()} before listening")


def client(url: str, body: bytes, seconds: float, start_at: float, out) -> None:
    host, port = url.removeprefix("http://").rsplit(":", 1)
    connection = http.client.HTTPConnection(host, int(port), timeout=120)
    latencies = []
    while time.time() < start_at:
        time.sleep(0.001)
    end = start_at + seconds
    while time.time() < end:
        began = time.perf_counter()
        connection.request("POST", "/score", body, {"Content-Type": "application/json"})
        response = connection.getresponse()
        data = response.read()
        if response.status != 200:
            raise RuntimeError(f"{response.status}: {data[:300]!r}")
        latencies.append(time.perf_counter() - began)
    out.put((latencies, time.time()))  # the last request may end well after `end`: the rate counts it


def load(url: str, rows: list[dict], clients: int, seconds: float) -> dict:
    body = json.dumps({"rows": rows}).encode()
    queue = multiprocessing.Queue()
    start_at = time.time() + 1.0
    workers = [multiprocessing.Process(target=client, args=(url, body, seconds, start_at, queue))
               for _ in range(clients)]
    for w in workers:
        w.start()
    results = [queue.get() for _ in workers]
    for w in workers:
        w.join()
    latencies = sorted(x for lat, _ in results for x in lat)
    elapsed = max(finished for _, finished in results) - start_at
    return {"requests": len(latencies), "completions_per_s": len(latencies) * len(rows) / elapsed,
            "p50_ms": 1000 * statistics.median(latencies),
            "p99_ms": 1000 * latencies[min(len(latencies) - 1, int(0.99 * len(latencies)))]}


def in_process(spec, rows: list[dict], seconds: float) -> float:
    from rlcore.rewards.engine import RewardEngine, rows_to_batch

    engine = RewardEngine(spec)
    engine.score_batch(rows_to_batch(rows))  # loads the model, warms the caches
    n, began = 0, time.perf_counter()
    while time.perf_counter() - began < seconds:
        engine.score_batch(rows_to_batch(rows))
        n += len(rows)
    return n / (time.perf_counter() - began)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--only", choices=["rules", "model"], default=None)
    args = parser.parse_args()

    from rlcore.rewards.check import save_spec
    from rlcore.rewards.spec import RewardSpec

    rows = batch_rows(args.batch)
    print(f"{time.strftime('%Y-%m-%d %H:%M')}, {os.cpu_count()} CPUs, load average "
          f"{' '.join(f'{x:.2f}' for x in os.getloadavg())}; {args.clients} clients, batches of {args.batch}, "
          f"{args.seconds:g} s each")
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        cases = []
        if args.only in (None, "rules"):
            cases.append(("rule-only", RewardSpec(name="rules", components=RULES, normalization="group_zscore")))
        if args.only in (None, "model"):
            from rlcore.training.tiny_models import build_minilm_reward_model

            model = build_minilm_reward_model(tmp / "minilm-rm")
            cases.append(("rules + MiniLM RM", RewardSpec(name="rules-rm", normalization="group_zscore",
                                                           components=[*RULES, {"kind": "reward_model", "name": "rm",
                                                                                "path": str(model),
                                                                                "batch_size": 64, "device": "cpu"}])))
        for label, spec in cases:
            path = tmp / f"{spec.name}.json"
            save_spec(spec, path)
            child, url = start_server(path, max_rows=max(1024, args.batch))
            try:
                result = load(url, rows, args.clients, args.seconds)
            finally:
                child.terminate()
                child.wait(timeout=30)
            line = (f"{label:18s} server: {result['completions_per_s']:9.0f} completions/s "
                    f"({result['requests']} requests), p50 {result['p50_ms']:.1f} ms, p99 {result['p99_ms']:.1f} ms")
            if "RM" in label:
                local = in_process(spec, rows, args.seconds)
                line += f"; in-process {local:.0f} completions/s, server/in-process {result['completions_per_s'] / local:.2f}"
            print(line, flush=True)


if __name__ == "__main__":
    main()
