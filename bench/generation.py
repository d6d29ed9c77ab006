"""Generation speed (issue 11): responses/s of rlcore's generation command

1. on a tiny local causal LM on CPU against plain transformers ``generate`` on the same model, prompts, batch
   size, sampling settings and longest-first batching, in one run (target >= 0.95x). Both sides include
   loading the model; rlcore also writes and fsyncs each batch's JSONL lines, which is part of its cost.
2. against the loopback OpenAI-compatible server (rlcore.judges.testing_server, what ``python -m rlcore judge
   serve-test`` runs) at its configured capacity: ``capacity`` requests at once, each taking ``latency_s``, so it
   can serve capacity / latency_s responses/s; target >= 90 % of that. Also printed: what one semaphore-bounded
   ``chat_batch`` of all requests (nothing written) gets from the same server in the same minute, so a shortfall
   can be told apart from the machine's load.

Prints ONE JSON line. usage: python bench/generation.py [--prompts 64] [--batch 8] [--new-tokens 32]
[--capacity 8] [--latency 0.05] [--endpoint-prompts 400] [--repeats 2]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from rlcore.generation.run import generate  # noqa: E402
from rlcore.generation.spec import GenerationSpec  # noqa: E402
from rlcore.training.tiny_models import build_tiny_causal_lm  # noqa: E402


def _prompts(path: Path, n: int) -> Path:
    words = "the reward model prefers short answers that cite a source and say thanks".split()
    with path.open("w") as out:
        for i in range(n):  # lengths vary, so batching order and padding matter as they do in real sets
            out.write(json.dumps({"id": i, "prompt": " ".join(words[: 3 + i % len(words)]) + f" q{i}"}) + "\n")
    return path


def plain_transformers(folder: Path, prompts: list[str], batch: int, new_tokens: int, seed: int) -> int:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForCausalLM.from_pretrained(folder).eval()
    tokenizer.padding_side = "left"
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    torch.manual_seed(seed)
    encoded = sorted((tokenizer(p, add_special_tokens=False)["input_ids"] for p in prompts), key=lambda ids: -len(ids))
    done = 0
    for start in range(0, len(encoded), batch):
        rows = encoded[start:start + batch]
        padded = tokenizer.pad({"input_ids": rows}, return_tensors="pt")
        with torch.inference_mode():
            out = model.generate(**padded, do_sample=True, temperature=1.0, top_p=1.0, max_new_tokens=new_tokens,
                                 use_cache=True, pad_token_id=tokenizer.pad_token_id)
        tokenizer.batch_decode(out[:, padded["input_ids"].shape[1]:], skip_special_tokens=True)
        done += len(rows)
    return done


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--prompts", type=int, default=64)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--new-tokens", type=int, default=32)
    parser.add_argument("--capacity", type=int, default=8)
    parser.add_argument("--latency", type=float, default=0.05)
    parser.add_argument("--endpoint-prompts", type=int, default=400)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    import torch

    from rlcore.judges.openai_compat import ChatCompletionsClient, OpenAICompatSettings
    from rlcore.judges.testing_server import ChatCompletionsServer, always

    result: dict = {"torch_threads": torch.get_num_threads(), "load_1min": os.getloadavg()[0]}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        folder = build_tiny_causal_lm(tmp / "policy")
        prompt_file = _prompts(tmp / "prompts.jsonl", args.prompts)
        texts = [json.loads(line)["prompt"] for line in prompt_file.read_text().splitlines()]
        plain, ours = [], []
        for repeat in range(args.repeats):  # interleaved, best of each: the machine's load hits both alike
            started = time.perf_counter()
            n = plain_transformers(folder, texts, args.batch, args.new_tokens, seed=repeat)
            plain.append(n / (time.perf_counter() - started))
            spec = GenerationSpec(prompts=prompt_file, output=tmp / f"out-{repeat}.jsonl", seed=repeat,
                                  policies=[{"kind": "folder", "location": str(folder)}], batch_size=args.batch,
                                  max_new_tokens=args.new_tokens)
            started = time.perf_counter()
            counts = generate(spec)
            ours.append(counts["written"] / (time.perf_counter() - started))
        result["local"] = {"prompts": args.prompts, "batch_size": args.batch, "max_new_tokens": args.new_tokens,
                           "transformers_responses_per_s": round(max(plain), 2),
                           "rlcore_responses_per_s": round(max(ours), 2),
                           "ratio": round(max(ours) / max(plain), 3), "target": 0.95,
                           "all_runs": {"transformers": [round(x, 2) for x in plain],
                                        "rlcore": [round(x, 2) for x in ours]}}

        endpoint_prompts = _prompts(tmp / "endpoint-prompts.jsonl", args.endpoint_prompts)
        conversations = [[{"role": "user", "content": json.loads(line)["prompt"]}]
                         for line in endpoint_prompts.read_text().splitlines()]
        rates, ceilings = [], []
        with ChatCompletionsServer(always("an answer"), latency_s=args.latency, capacity=args.capacity) as server:
            for repeat in range(args.repeats):  # interleaved, best of each, as above
                spec = GenerationSpec(prompts=endpoint_prompts, output=tmp / f"endpoint-{repeat}.jsonl",
                                      batch_size=args.capacity,
                                      policies=[{"kind": "endpoint", "location": "served", "base_url": server.base_url,
                                                 "max_concurrency": args.capacity}])
                started = time.perf_counter()
                counts = generate(spec)
                rates.append(counts["written"] / (time.perf_counter() - started))
                # what this server serves here and now to the best client we have: every request in one
                # semaphore-bounded gather, nothing written (scheduling jitter under load hits both alike)
                client = ChatCompletionsClient(OpenAICompatSettings(
                    base_url=server.base_url, model="served", max_concurrency=args.capacity, logprobs=False))
                started = time.perf_counter()
                outcomes = client.chat_batch(conversations)
                ceilings.append(sum(o.error is None for o in outcomes) / (time.perf_counter() - started))
        can_serve = args.capacity / args.latency
        rate = max(rates)
        result["endpoint"] = {"responses": counts["written"], "capacity": args.capacity, "latency_s": args.latency,
                              "server_can_serve_per_s": round(can_serve, 1), "rlcore_responses_per_s": round(rate, 1),
                              "fraction_of_capacity": round(rate / can_serve, 3), "target": 0.9,
                              "one_gather_responses_per_s": round(max(ceilings), 1),
                              "fraction_of_one_gather": round(rate / max(ceilings), 3),
                              "all_runs": {"rlcore": [round(x, 1) for x in rates],
                                           "one_gather": [round(x, 1) for x in ceilings]}}
    result["load_1min_after"] = os.getloadavg()[0]
    print(json.dumps(result))


if __name__ == "__main__":
    main()
