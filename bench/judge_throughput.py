"""Judge throughput against a loopback OpenAI-compatible server of known capacity.

The server (``python -m rlcore judge serve-test``, its own process so it does not share our GIL) takes
``--latency`` seconds per request and serves ``--capacity`` requests at once, so it can serve at most
capacity / latency requests per second. The judge runs with ``max_concurrency = capacity`` and labels
pairs through the full path (template rendering, HTTP, retries machinery, reply parsing, logprob
confidence). Prints one JSON line; the target is ``efficiency >= 0.9``.

A bare client (plain httpx, same concurrency, no judge logic) is timed against the same server as a
second reference: ``vs_bare_client`` is the share of its rate the judge reaches.

usage: python bench/judge_throughput.py [--requests 640] [--latency 0.25] [--capacity 16]
"""

import argparse
import asyncio
import json
import subprocess
import sys
import time


async def bare_client_rps(url: str, n: int, concurrency: int) -> float:
    """Requests per second of a minimal httpx client at the same concurrency."""
    import httpx

    slots = asyncio.Semaphore(concurrency)
    body = {"model": "test-judge", "messages": [{"role": "user", "content": "A or B?"}]}
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=url + "/", limits=limits, timeout=30) as client:
        async def one() -> None:
            async with slots:
                (await client.post("chat/completions", json=body)).raise_for_status()

        await asyncio.gather(*(one() for _ in range(concurrency * 2)))  # warm-up
        started = time.perf_counter()
        await asyncio.gather(*(one() for _ in range(n)))
        return n / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=640)
    parser.add_argument("--latency", type=float, default=0.25)
    parser.add_argument("--capacity", type=int, default=16)
    args = parser.parse_args()

    from rlcore.judges.base import PairRequest
    from rlcore.judges.openai_compat import OpenAICompatJudge, OpenAICompatSettings

    server = subprocess.Popen(
        [sys.executable, "-m", "rlcore", "judge", "serve-test", "--port", "0", "--latency", str(args.latency),
         "--capacity", str(args.capacity), "--reply", "Verdict: A\nStrength: 2"],
        stdout=subprocess.PIPE, text=True)
    try:
        url = server.stdout.readline().strip().rsplit(" ", 1)[-1]
        judge = OpenAICompatJudge(OpenAICompatSettings(base_url=url, model="test-judge",
                                                       max_concurrency=args.capacity, timeout_s=30))
        pairs = [PairRequest(request_id=str(i), prompt=f"Question {i}?", response_a=f"answer {i} " * 20,
                             response_b=f"other answer {i} " * 15) for i in range(args.requests)]
        judge.compare(pairs[: args.capacity * 2])  # warm-up: imports, first connections
        started = time.perf_counter()
        results = judge.compare(pairs)
        seconds = time.perf_counter() - started
        bare_rps = asyncio.run(bare_client_rps(url, args.requests, args.capacity))
    finally:
        server.terminate()
        server.wait(timeout=10)
    achieved = len(results) / seconds
    capacity_rate = args.capacity / args.latency
    print(json.dumps({
        "bench": "judge_throughput",
        "requests": len(results),
        "labelled": sum(r.ok for r in results),
        "server_latency_s": args.latency,
        "server_capacity": args.capacity,
        "max_concurrency": args.capacity,
        "server_capacity_rps": round(capacity_rate, 1),
        "achieved_rps": round(achieved, 1),
        "efficiency": round(achieved / capacity_rate, 3),
        "target_efficiency": 0.9,
        "seconds": round(seconds, 2),
        "bare_client_rps": round(bare_rps, 1),
        "vs_bare_client": round(achieved / bare_rps, 3),
    }), flush=True)


if __name__ == "__main__":
    main()
