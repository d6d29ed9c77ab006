"""``python -m rlcore judge ...``: LM judging from the command line.

- ``judge pairwise --endpoint URL --model NAME --input pairs.jsonl``: judge each pair in both orders
  through an OpenAI-compatible endpoint (or ``--local`` for a Hugging Face model run in-process) and
  write one JSON line per pair: combined verdict, both verdicts, confidence, position_bias, and each
  order's rendered prompt and raw reply. Input lines: ``{"id"?, "prompt", "response_a", "response_b",
  "criterion"?}``.
- ``judge serve-test --port P [--model DIR]``: a loopback OpenAI-compatible server for trying a judge
  setup without a real one: a fixed scripted reply, or a local model.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, TextIO

from rlcore.errors import UserError
from rlcore.jsonl import read_jsonl_objects

_CHUNK_PER_SLOT = 16  # pairs per batch per concurrency slot: enough to keep every slot busy, small enough to stream


def read_pairs(path: Path) -> list[Any]:
    """Read ``pairs.jsonl`` into PairRequests; a bad line raises UserError naming the file, line and field."""
    from pydantic import ValidationError

    from rlcore.judges.base import PairRequest

    if not path.is_file():
        raise UserError(f"--input: {path} does not exist")
    pairs = []
    for number, row in read_jsonl_objects(path, "a JSON object with prompt, response_a, response_b"):
        request_id = row.get("id", row.get("request_id"))
        try:
            pairs.append(PairRequest(request_id=None if request_id is None else str(request_id),
                                     prompt=row.get("prompt"), response_a=row.get("response_a"),
                                     response_b=row.get("response_b"), criterion=row.get("criterion")))
        except ValidationError as exc:
            error = exc.errors()[0]
            field = ".".join(str(part) for part in error["loc"])
            raise UserError(f"{path}:{number}: field {field!r}: {error['msg']}") from exc
    if not pairs:
        raise UserError(f"--input: {path} holds no pairs")
    return pairs


def read_templates(path: Path | None):
    """Judge templates from a JSON or YAML file (the JudgeTemplates contract), or the defaults."""
    from pydantic import ValidationError

    from rlcore.judges.prompts import JudgeTemplates

    if path is None:
        return JudgeTemplates()
    if not path.is_file():
        raise UserError(f"--templates: {path} does not exist")
    import yaml

    try:
        templates = JudgeTemplates.model_validate(yaml.safe_load(path.read_text(encoding="utf-8")) or {})
    except (yaml.YAMLError, ValidationError) as exc:
        raise UserError(f"{path}: not a valid set of judge templates: {exc}") from exc
    problems = templates.problems()
    if problems:
        raise UserError(f"{path}: {problems[0]}")
    return templates


def read_api_key_file(path: Path) -> str:
    """The API key in ``path`` (one line); the file is deleted once read, so the key does not stay on disk.

    For launchers (the webapp) that hold a key the worker's environment does not: the key never goes on
    a command line, where ``ps`` and job records would show it.
    """
    try:
        key = path.read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise UserError(f"--api-key-file: cannot read {path} ({exc.strerror})") from exc
    finally:
        path.unlink(missing_ok=True)
    if not key:
        raise UserError(f"--api-key-file: {path} is empty")
    return key


def build_judge(args: argparse.Namespace):
    templates = read_templates(args.templates)
    if args.local:
        from rlcore.judges.local_hf import LocalHFJudge, LocalHFSettings

        return LocalHFJudge(LocalHFSettings(model=args.model, device=args.device, batch_size=args.batch_size,
                                            max_new_tokens=args.max_tokens), templates)
    if not args.endpoint:
        raise UserError("--endpoint: give the server's API root (e.g. http://127.0.0.1:8000/v1), or --local")
    from rlcore.judges.openai_compat import OpenAICompatJudge, OpenAICompatSettings

    api_key = read_api_key_file(args.api_key_file) if getattr(args, "api_key_file", None) else None
    settings = OpenAICompatSettings(base_url=args.endpoint, model=args.model, api_key_env=args.api_key_env,
                                    api_key=api_key,
                                    max_concurrency=args.max_concurrency, timeout_s=args.timeout,
                                    max_retries=args.max_retries, max_tokens=args.max_tokens,
                                    logprobs=not args.no_logprobs)
    return OpenAICompatJudge(settings, templates)


def run_pairwise(args: argparse.Namespace) -> int:
    from rlcore.events import emit_progress
    from rlcore.judges.debias import compare_both_orders

    pairs = read_pairs(args.input)
    judge = build_judge(args)
    out: TextIO = open(args.output, "w", encoding="utf-8") if args.output else sys.stdout
    chunk = max(1, _CHUNK_PER_SLOT * getattr(args, "max_concurrency", 1))
    labelled = biased = 0
    try:
        for start in range(0, len(pairs), chunk):
            for label in compare_both_orders(judge, pairs[start:start + chunk]):
                labelled += label.ok
                biased += bool(label.position_bias)
                out.write(json.dumps(label.model_dump(mode="json")) + "\n")
            out.flush()
            if args.output:  # stdout carries the labels otherwise; progress would mix with them
                emit_progress(min(start + chunk, len(pairs)), len(pairs))
    finally:
        if args.output:
            out.close()
    print(f"judge pairwise: {labelled}/{len(pairs)} labelled, {biased} with position bias, "
          f"{len(pairs) - labelled} without a label", file=sys.stderr)
    return 0


def run_serve_test(args: argparse.Namespace) -> int:
    from rlcore.judges.testing_server import serve_test

    return serve_test(port=args.port, model=args.model, reply=args.reply, latency_s=args.latency,
                      capacity=args.capacity, host=args.host)


def register(subparsers) -> None:
    parser = subparsers.add_parser("judge", help="LM judging: pairwise labels in both orders, a test server")
    commands = parser.add_subparsers(dest="judge_command", metavar="JUDGE_COMMAND")
    parser.set_defaults(handler=lambda args: parser.print_help() or 2)

    pairwise = commands.add_parser("pairwise", help="judge pairs in both orders; JSON lines out")
    pairwise.add_argument("--input", type=Path, required=True, help="pairs.jsonl: prompt, response_a, response_b")
    pairwise.add_argument("--model", required=True, help="model name at the endpoint, or a path/hub id with --local")
    pairwise.add_argument("--endpoint", help="OpenAI-compatible API root, e.g. http://127.0.0.1:8000/v1")
    pairwise.add_argument("--local", action="store_true", help="run --model in-process with transformers")
    pairwise.add_argument("--output", type=Path, help="write JSON lines here (default: stdout)")
    pairwise.add_argument("--templates", type=Path, help="JSON/YAML judge templates (default: built-in)")
    pairwise.add_argument("--api-key-env", help="environment variable that holds the API key")
    pairwise.add_argument("--api-key-file", type=Path,
                          help="file holding the API key; deleted once read (keeps the key off the command line)")
    pairwise.add_argument("--max-concurrency", type=int, default=8, help="requests in flight at once")
    pairwise.add_argument("--timeout", type=float, default=60.0, help="seconds per attempt")
    pairwise.add_argument("--max-retries", type=int, default=4, help="retries on timeouts, 5xx, 429")
    pairwise.add_argument("--max-tokens", type=int, default=512, help="most tokens per judge reply")
    pairwise.add_argument("--no-logprobs", action="store_true", help="do not ask the endpoint for logprobs")
    pairwise.add_argument("--device", help="with --local: cuda, cpu, ... (default: GPU if any)")
    pairwise.add_argument("--batch-size", type=int, default=8, help="with --local: prompts per generate call")
    pairwise.set_defaults(handler=run_pairwise)

    serve = commands.add_parser("serve-test", help="serve a loopback OpenAI-compatible test endpoint")
    serve.add_argument("--port", type=int, default=8011, help="port to listen on (0: any free port)")
    serve.add_argument("--host", default="127.0.0.1", help="address to bind (default loopback only)")
    serve.add_argument("--model", help="a local model directory (or hub id) to answer with")
    serve.add_argument("--reply", default="Verdict: A\nStrength: 1", help="fixed reply when no --model")
    serve.add_argument("--latency", type=float, default=0.0, help="seconds each request takes")
    serve.add_argument("--capacity", type=int, default=None, help="requests served at once (more queue)")
    serve.set_defaults(handler=run_serve_test)
