"""Run a GenerationSpec: local models with transformers (batched, left-padded, KV cache), endpoints with the
judges' OpenAI-compatible client (bounded concurrency, retries). Output is appended batch by batch, so a stop
or a crash keeps what was generated, and a re-run skips every (prompt, generation key, sample) already there.

Each output line::

    {"prompt_key": "3", "prompt_line": 3, "prompt": ..., "sample_index": 0, "response": "...",
     "finish_reason": "stop" | "length", "policy": {kind, location, name, registry_id, step},
     "sampling": {temperature, top_p, max_new_tokens, seed}, "generation_key": "...", "generated_at": ISO time,
     "prompt_tokens": int | null, "truncated_tokens": int}
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextvars
import json
import os
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from rlcore.errors import UserError
from rlcore.events import NOTE_PREFIX, emit_progress
from rlcore.generation.spec import GenerationSpec, PolicyRef
from rlcore.jsonl import read_jsonl_objects


@dataclass(frozen=True)
class PromptRow:
    key: str
    line: int
    prompt: str | list[dict[str, str]]


@dataclass(frozen=True)
class Work:
    prompt: PromptRow
    sample_index: int


def read_prompts(path: Path) -> list[PromptRow]:
    rows = []
    for line, obj in read_jsonl_objects(path, expected="a JSON object with a `prompt`"):
        prompt = obj.get("prompt")
        is_chat = isinstance(prompt, list) and all(isinstance(m, dict) and "content" in m for m in prompt)
        if not (isinstance(prompt, str) and prompt.strip()) and not (is_chat and prompt):
            raise UserError(f"{path}:{line}: `prompt` must be non-empty text or a list of chat messages")
        rows.append(PromptRow(key=str(obj.get("id", line)), line=line, prompt=prompt))
    if not rows:
        raise UserError(f"{path}: the prompt set is empty")
    return rows


def existing_keys(output: Path) -> set[tuple[str, str, int]]:
    """(prompt_key, generation_key, sample_index) already in ``output``. A last line cut off by a crash is
    removed first, so the next append starts on a fresh line."""
    if not output.exists():
        return set()
    data = output.read_bytes()
    if data and not data.endswith(b"\n"):
        with output.open("r+b") as handle:
            handle.truncate(data.rfind(b"\n") + 1)
    done = set()
    for _, row in read_jsonl_objects(output):
        done.add((str(row.get("prompt_key")), str(row.get("generation_key")), int(row.get("sample_index", -1))))
    return done


def note(message: str) -> None:
    print(NOTE_PREFIX + message, file=sys.stderr, flush=True)


def _line(spec: GenerationSpec, policy: PolicyRef, key: str, work: Work, response: str, finish_reason: str | None,
          prompt_tokens: int | None = None, truncated: int = 0) -> dict[str, Any]:
    return {"prompt_key": work.prompt.key, "prompt_line": work.prompt.line, "prompt": work.prompt.prompt,
            "sample_index": work.sample_index, "response": response, "finish_reason": finish_reason,
            "policy": {"kind": policy.kind, "location": policy.location, "name": policy.label,
                       "registry_id": policy.registry_id, "step": policy.step},
            "sampling": spec.sampling(), "generation_key": key,
            "generated_at": datetime.now(timezone.utc).isoformat(), "prompt_tokens": prompt_tokens,
            "truncated_tokens": truncated}


def _batches(items: Sequence[Work], size: int) -> Iterator[list[Work]]:
    for start in range(0, len(items), size):
        yield list(items[start:start + size])


def generate(spec: GenerationSpec) -> dict[str, int]:
    """Generate what ``spec.output`` lacks; returns counts {written, skipped, total}."""
    prompts = read_prompts(spec.prompts)
    spec.output.parent.mkdir(parents=True, exist_ok=True)
    done = existing_keys(spec.output)
    plan: list[tuple[PolicyRef, str, list[Work]]] = []
    skipped = 0
    for policy in spec.policies:
        key = policy.generation_key(spec)
        todo = [Work(p, i) for p in prompts for i in range(spec.samples_per_prompt) if (p.key, key, i) not in done]
        skipped += len(prompts) * spec.samples_per_prompt - len(todo)
        plan.append((policy, key, todo))
    total = len(prompts) * spec.samples_per_prompt * len(spec.policies)
    if skipped:
        note(f"resuming: {skipped} of {total} responses are already in {spec.output}; generating the other "
             f"{total - skipped}")
    progress = [skipped]
    emit_progress(progress[0], total)
    with spec.output.open("a", encoding="utf-8") as out:
        def write(lines: list[dict[str, Any]]) -> None:
            for line in lines:
                out.write(json.dumps(line, ensure_ascii=False) + "\n")
            out.flush()
            os.fsync(out.fileno())  # a kill right after this batch must not lose it
            progress[0] += len(lines)
            emit_progress(progress[0], total)

        for policy, key, todo in plan:
            if not todo:
                continue
            if policy.kind == "endpoint":
                _generate_endpoint(spec, policy, key, todo, write)
            else:
                _generate_local(spec, policy, key, todo, write)
    return {"written": progress[0] - skipped, "skipped": skipped, "total": total}


# --- local models -------------------------------------------------------------------------------------------

def load_local_policy(policy: PolicyRef):
    """(model, tokenizer) of a folder or hub id; a folder that is not a causal LM is refused by name."""
    from rlcore.generation.models import causal_lm_problem
    from rlcore.training.runtime import resolve_model_source

    source = resolve_model_source(policy.location, f"policy {policy.label!r}")
    if Path(source).is_dir() and (problem := causal_lm_problem(source)):
        raise UserError(f"policy {policy.label!r}: {problem}")
    from transformers import AutoModelForCausalLM, AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(source)
        model = AutoModelForCausalLM.from_pretrained(source)
    except (OSError, ValueError) as exc:
        raise UserError(f"policy {policy.label!r}: cannot load {source} as a causal LM: {exc}") from exc
    tokenizer.padding_side = "left"  # batched generation continues each row from its own last token
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    import torch

    device = "cuda" if torch.cuda.is_available() else "cpu"
    model.to(device).eval()
    return model, tokenizer


def prompt_text(tokenizer, prompt: str | list[dict[str, str]]) -> str:
    if isinstance(prompt, str):
        return prompt
    if getattr(tokenizer, "chat_template", None):
        return tokenizer.apply_chat_template(prompt, tokenize=False, add_generation_prompt=True)
    return "\n".join(m["content"] for m in prompt)


def context_length(model) -> int | None:
    config = model.config
    for name in ("max_position_embeddings", "n_positions", "max_sequence_length"):
        if isinstance(getattr(config, name, None), int):
            return getattr(config, name)
    return None


def encode_prompts(spec: GenerationSpec, policy: PolicyRef, model, tokenizer,
                   rows: Sequence[PromptRow]) -> dict[str, tuple[list[int], int]]:
    """Token ids per prompt key and how many were cut (truncate_left), or a UserError naming the longest line
    (refuse). Checked for the whole set before anything is generated."""
    limit = context_length(model)
    room = None if limit is None else limit - spec.max_new_tokens
    if room is not None and room < 1:
        raise UserError(f"max_new_tokens {spec.max_new_tokens} leaves no room for a prompt in policy "
                        f"{policy.label!r}'s context of {limit} tokens: lower max_new_tokens")
    encoded: dict[str, tuple[list[int], int]] = {}
    too_long = []
    for row in rows:
        ids = tokenizer(prompt_text(tokenizer, row.prompt), add_special_tokens=False)["input_ids"]
        cut = 0
        if room is not None and len(ids) > room:
            if spec.prompt_overflow == "refuse":
                too_long.append((row, len(ids)))
                continue
            cut, ids = len(ids) - room, ids[-room:]
        encoded[row.key] = (ids, cut)
    if too_long:
        row, n = max(too_long, key=lambda item: item[1])
        raise UserError(
            f"{spec.prompts}:{row.line}: the prompt is {n} tokens; policy {policy.label!r} has a context of {limit} "
            f"tokens and max_new_tokens is {spec.max_new_tokens}, so a prompt may have at most {room}. "
            f"{len(too_long)} prompt(s) are too long. Shorten them, lower max_new_tokens, or set "
            "prompt_overflow: truncate_left (keeps each prompt's last tokens and records how many were cut).")
    cut = [c for _, c in encoded.values() if c]
    if cut:
        note(f"policy {policy.label!r}: {len(cut)} prompt(s) were longer than {room} tokens and lost their first "
             f"{min(cut)}-{max(cut)} tokens (prompt_overflow: truncate_left; each line records truncated_tokens)")
    return encoded


def generate_batch(model, tokenizer, batch_ids: Sequence[list[int]], spec: GenerationSpec) -> tuple[list[str], list[str]]:
    """One left-padded ``generate`` call with the KV cache; (texts, finish reasons)."""
    import torch

    padded = tokenizer.pad({"input_ids": list(batch_ids)}, padding=True, return_tensors="pt").to(model.device)
    sampling = spec.temperature > 0
    kwargs = {"do_sample": True, "temperature": spec.temperature, "top_p": spec.top_p} if sampling else {
        "do_sample": False}
    with torch.inference_mode():
        out = model.generate(**padded, max_new_tokens=spec.max_new_tokens, use_cache=True,
                             pad_token_id=tokenizer.pad_token_id, **kwargs)
    new = out[:, padded["input_ids"].shape[1]:]
    eos = tokenizer.eos_token_id
    texts, reasons = [], []
    for row in new.tolist():
        ended = eos is not None and eos in row
        kept = row[:row.index(eos)] if ended else row
        texts.append(tokenizer.decode([t for t in kept if t != tokenizer.pad_token_id], skip_special_tokens=True))
        reasons.append("stop" if ended or len(kept) < spec.max_new_tokens else "length")
    return texts, reasons


def _generate_local(spec: GenerationSpec, policy: PolicyRef, key: str, todo: list[Work], write) -> None:
    if spec.backend == "vllm":
        try:
            import vllm  # noqa: F401
        except ImportError:
            raise UserError("backend 'vllm' needs the vllm package, which is not installed here: install it "
                            "(pip install vllm, on a GPU machine) or set backend: transformers") from None
        raise UserError("backend 'vllm' is not wired up in this version: set backend: transformers")
    import torch

    model, tokenizer = load_local_policy(policy)
    rows = list({w.prompt.key: w.prompt for w in todo}.values())
    encoded = encode_prompts(spec, policy, model, tokenizer, rows)
    torch.manual_seed(spec.seed)
    started, count = time.monotonic(), 0
    # longest first: rows of similar length share a batch, so little compute goes to padding
    ordered = sorted(todo, key=lambda w: -len(encoded[w.prompt.key][0]))
    for batch in _batches(ordered, spec.batch_size):
        texts, reasons = generate_batch(model, tokenizer, [encoded[w.prompt.key][0] for w in batch], spec)
        write([_line(spec, policy, key, w, text, reason, len(encoded[w.prompt.key][0]), encoded[w.prompt.key][1])
               for w, text, reason in zip(batch, texts, reasons)])
        count += len(batch)
    note(f"policy {policy.label!r}: {count} responses in {time.monotonic() - started:.1f}s")


# --- endpoints ----------------------------------------------------------------------------------------------

def _read_key_file(policy: PolicyRef) -> str | None:
    """The key a worker handed over in a file; the file is deleted once read, so it never outlives the start."""
    if policy.api_key_file is None:
        return None
    try:
        key = policy.api_key_file.read_text().strip()
    except OSError as exc:
        raise UserError(f"policy {policy.label!r}: cannot read api_key_file ({exc.strerror})") from None
    policy.api_key_file.unlink(missing_ok=True)
    return key or None


# the seed of the request a task is sending: each sample index has its own (seed + index), so the samples of one
# prompt differ yet repeat on a re-run; a context variable, because every request runs in its own asyncio task
_REQUEST_SEED: contextvars.ContextVar[int] = contextvars.ContextVar("generation_request_seed")


def _endpoint_client(spec: GenerationSpec, policy: PolicyRef, key: str | None):
    from rlcore.judges.openai_compat import ChatCompletionsClient, OpenAICompatSettings

    class GenerationClient(ChatCompletionsClient):
        """The judges' client (concurrency, retries, 429 handling), asking for samples instead of verdicts."""

        def _body(self, messages):
            return {**super()._body(messages), "top_p": spec.top_p, "seed": _REQUEST_SEED.get()}

    settings = OpenAICompatSettings(
        base_url=policy.base_url, model=policy.location, api_key_env=policy.api_key_env, api_key=key,
        max_concurrency=policy.max_concurrency, timeout_s=policy.timeout_s, max_retries=policy.max_retries,
        temperature=spec.temperature, max_tokens=spec.max_new_tokens, logprobs=False, top_logprobs=0)
    return GenerationClient(settings)


def _messages(work: Work) -> list[dict[str, str]]:
    prompt = work.prompt.prompt
    return [{"role": "user", "content": prompt}] if isinstance(prompt, str) else [dict(m) for m in prompt]


async def _stream_endpoint(spec: GenerationSpec, policy: PolicyRef, key: str, todo: list[Work], write,
                           client) -> tuple[int, list[tuple[Work, str]]]:
    """Keep all ``max_concurrency`` slots busy over the whole of ``todo``: each slot takes the next request as soon
    as its last one answers, so one slow request holds up one slot, not a round. Answers are written as they
    come (each line names its prompt and sample, so order does not matter for a re-run) by one writer task that
    fsyncs on a thread, so the event loop never waits on the disk and a kill loses only what is in hand.
    Returns (written, failures)."""
    queue = iter(todo)
    pending: list[dict[str, Any]] = []
    failures: list[tuple[Work, str]] = []
    written = 0
    wake, done = asyncio.Event(), False

    async def writer() -> None:
        nonlocal pending, written
        while True:
            await wake.wait()
            wake.clear()
            while pending:  # whatever came in while the last write was being fsynced goes out as one batch
                lines, pending = pending, []
                await asyncio.to_thread(write, lines)
                written += len(lines)
            if done:
                return

    async def slot(http, slots) -> None:
        for work in queue:  # a shared iterator: no request is taken twice
            # nothing gets through (unreachable, wrong key): stop rather than hammer it
            if not written and not pending and len(failures) >= policy.max_concurrency:
                return
            _REQUEST_SEED.set(spec.seed + work.sample_index)
            outcome = await client._one(http, slots, _messages(work))
            if outcome.error is None:
                pending.append(_line(spec, policy, key, work, outcome.content or "", outcome.finish_reason))
                wake.set()
            else:
                failures.append((work, outcome.error))

    slots = asyncio.Semaphore(policy.max_concurrency)
    writing = asyncio.create_task(writer())
    async with client.http_client() as http:
        try:
            await asyncio.gather(*(slot(http, slots) for _ in range(policy.max_concurrency)))
        finally:
            done = True  # a failure elsewhere still writes the answers already in hand
            wake.set()
            await writing
    return written, failures


def _generate_endpoint(spec: GenerationSpec, policy: PolicyRef, key: str, todo: list[Work], write) -> None:
    api_key = _read_key_file(policy)  # not `key`: that is the generation key every line carries
    client = _endpoint_client(spec, policy, api_key)
    stream = _stream_endpoint(spec, policy, key, todo, write, client)
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        written, failures = asyncio.run(stream)
    else:  # called from inside an event loop (a notebook): run on a thread of its own
        with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
            written, failures = pool.submit(asyncio.run, stream).result()
    if failures:
        work, reason = failures[0]
        raise UserError(
            f"policy {policy.label!r} at {policy.base_url}: {len(failures)} of {len(todo)} requests failed "
            f"(first, prompt line {work.prompt.line}: {reason}). {written} responses were kept in {spec.output}; "
            "check the endpoint URL, model name and key, then run again: it generates only what is missing.")
