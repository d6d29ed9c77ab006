"""``python -m rlcore judge ...``: LM judging from the command line.

- ``judge pairwise --endpoint URL --model NAME --input pairs.jsonl``: judge each pair in both orders
  through an OpenAI-compatible endpoint (or ``--local`` for a Hugging Face model run in-process) and
  write one JSON line per pair: combined verdict, both verdicts, confidence, position_bias, and each
  order's rendered prompt and raw reply. Input lines: ``{"id"?, "prompt", "response_a", "response_b",
  "criterion"?}``.
- ``judge rank ... --input rankings.jsonl``: rank each line's responses as given and reversed and write
  one JSON line each: ``verdict`` (0-based indices best first, or null with ``error``), both orders'
  rankings (``forward_verdict``, ``reversed_verdict`` in the request's indices), confidence,
  position_bias, and each order's rendered prompt and raw reply. Input lines: ``{"id"?, "prompt",
  "responses": [...], "criterion"?}``.
- ``judge grade ... --input grades.jsonl``: score each response on each of its rubric criteria and write
  one JSON line each: ``criteria: {name: {score, confidence, error, rendered_prompt, raw_reply}}``. Input
  lines: ``{"id"?, "prompt", "response", "reference"?, "criteria": [{name, description?, scale_min?,
  scale_max?}]}``.
- ``judge steps ... --input steps.jsonl [--scale ternary|score5]``: grade every step of each response with
  the ``steps`` template (the prompt and the earlier steps as context) and write one JSON line each:
  ``grades`` (one per step: ternary -1 bad / 0 neutral / 1 good, or score5 1-5; null when any step has no
  grade), ``first_error`` (the first step graded bad: ternary -1, score5 1-2; null: none), ``scale``, and
  ``steps``: per step ``{score, confidence, error, rendered_prompt, raw_reply}``. Input lines: ``{"id"?,
  "prompt", "steps": [...], "scale"?}`` (or TRL stepwise ``completions``; ``scale`` overrides ``--scale``).

- ``judge serve-test --port P [--model DIR]``: a loopback OpenAI-compatible server for trying a judge
  setup without a real one: a fixed scripted reply, or a local model.

The judging commands share their options, backends and output (:func:`_judge_lines`).
``pairwise`` and ``rank`` also take ``--rubric criteria.json``: every response of every line is then
graded on those criteria too, and each line gets ``criterion_scores``: one ``{name: {score, confidence,
error, rendered_prompt, raw_reply}}`` per response, in the line's response order.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TextIO

from pydantic import BaseModel, ConfigDict, Field, field_validator

from rlcore.errors import UserError, validation_message
from rlcore.judges.debias import CriterionToGrade, ResponseToGrade
from rlcore.jsonl import read_jsonl_objects

_CHUNK_PER_SLOT = 16  # pairs per batch per concurrency slot: enough to keep every slot busy, small enough to stream


def _read_requests(path: Path, what: str, expected: str, build) -> list[Any]:
    """Read ``path`` line by line with ``build(row)``; a bad line raises UserError naming the file, line and field."""
    from pydantic import ValidationError

    if not path.is_file():
        raise UserError(f"--input: {path} does not exist")
    items = []
    for number, row in read_jsonl_objects(path, expected):
        request_id = row.get("id", row.get("request_id"))
        try:
            items.append(build(None if request_id is None else str(request_id), row))
        except ValidationError as exc:
            raise UserError(validation_message(f"{path}:{number}", exc)) from exc
    if not items:
        raise UserError(f"--input: {path} holds no {what}")
    return items


def read_pairs(path: Path) -> list[Any]:
    """Read ``pairs.jsonl`` into PairRequests; a bad line raises UserError naming the file, line and field."""
    from rlcore.judges.base import PairRequest

    return _read_requests(path, "pairs", "a JSON object with prompt, response_a, response_b",
                          lambda request_id, row: PairRequest(
                              request_id=request_id, prompt=row.get("prompt"), response_a=row.get("response_a"),
                              response_b=row.get("response_b"), criterion=row.get("criterion")))


def read_rankings(path: Path) -> list[Any]:
    """Read ``rankings.jsonl`` into RankRequests (at least two responses each)."""
    from rlcore.judges.base import RankRequest

    return _read_requests(path, "rankings", "a JSON object with prompt, responses",
                          lambda request_id, row: RankRequest(
                              request_id=request_id, prompt=row.get("prompt"), responses=row.get("responses"),
                              criterion=row.get("criterion")))


class GradingItem(BaseModel):
    """One line of ``grades.jsonl``: a response and the criteria to score it on."""

    model_config = ConfigDict(frozen=True)

    response: ResponseToGrade
    criteria: list[CriterionToGrade] = Field(min_length=1)

    @field_validator("criteria")
    @classmethod
    def _unique_names(cls, criteria: list[CriterionToGrade]) -> list[CriterionToGrade]:
        names = [c.name for c in criteria]
        if len(set(names)) != len(names):
            raise ValueError(f"criterion names must be unique, got {names}")
        return criteria


def read_gradings(path: Path) -> list[GradingItem]:
    """Read ``grades.jsonl``: each line a response with its own criteria (names unique within the line)."""

    def build(request_id: str | None, row: dict) -> GradingItem:
        return GradingItem(response=ResponseToGrade(request_id=request_id, prompt=row.get("prompt"),
                                                    response=row.get("response"), reference=row.get("reference")),
                           criteria=row.get("criteria"))

    return _read_requests(path, "responses to grade", "a JSON object with prompt, response, criteria", build)


# A step grade's scale: its (lowest, highest) grade, and the grades that count as a wrong step.
STEP_SCALES: dict[str, tuple[int, int, tuple[int, ...]]] = {"ternary": (-1, 1, (-1,)), "score5": (1, 5, (1, 2))}


class StepItem(BaseModel):
    """One line of ``steps.jsonl``: a response already split into steps."""

    model_config = ConfigDict(frozen=True)

    request_id: str | None = None
    prompt: str
    steps: list[str] = Field(min_length=1)
    scale: str | None = Field(None, description="this line's scale (ternary or score5); None: --scale")

    @field_validator("scale")
    @classmethod
    def _known_scale(cls, scale: str | None) -> str | None:
        if scale is not None and scale not in STEP_SCALES:
            raise ValueError(f"unknown scale {scale!r}: use {' or '.join(sorted(STEP_SCALES))}")
        return scale


def read_step_items(path: Path) -> list[StepItem]:
    """Read ``steps.jsonl`` (``steps``, or TRL stepwise ``completions``); a bad line names file, line, field."""
    return _read_requests(path, "responses with steps", "a JSON object with prompt, steps",
                          lambda request_id, row: StepItem(
                              request_id=request_id, prompt=row.get("prompt"),
                              steps=row.get("steps", row.get("completions")), scale=row.get("scale")))


def step_line(item: StepItem, results: list[Any], scale: str) -> dict:
    """One output line from a response's step grades. A score between two grades is rounded to the nearest
    grade (the scale's grades are integers); the line has no ``grades`` unless every step has one, because a
    pre-label must grade every step (as a person must)."""
    low, high, bad = STEP_SCALES[scale]
    steps = [{"score": r.verdict, "confidence": r.confidence, "error": r.error, "rendered_prompt": r.rendered_prompt,
              "raw_reply": r.raw_reply} for r in results]
    failed = [f"step {k + 1}: {r.error or 'no score'}" for k, r in enumerate(results) if r.verdict is None]
    grades = None if failed else [min(high, max(low, int(math.floor(r.verdict + 0.5)))) for r in results]
    first_error = next((k for k, g in enumerate(grades) if g in bad), None) if grades else None
    return {"request_id": item.request_id, "judge": results[0].judge if results else None, "scale": scale,
            "grades": grades, "first_error": first_error, "steps": steps, "error": "; ".join(failed) or None}


def read_templates(path: Path | None):
    """Judge templates from a JSON or YAML file (the JudgeTemplates contract), or the defaults."""
    from pydantic import ValidationError

    from rlcore.judges.prompts import JudgeTemplates

    if path is None:
        return JudgeTemplates()
    if not path.is_file():
        raise UserError(f"--templates: {path} does not exist")
    import yaml

    from rlcore.rubric import load_yaml

    try:
        templates = JudgeTemplates.model_validate(load_yaml(path.read_text(encoding="utf-8")) or {})
    except yaml.YAMLError as exc:
        raise UserError(f"{path}: not a valid set of judge templates: {exc}") from exc
    except ValidationError as exc:
        raise UserError(validation_message(str(path), exc)) from exc
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


def read_rubric_criteria(path: Path) -> list[CriterionToGrade]:
    """The criteria a judge grades, from JSON: a list of criteria, or a rubric (``{"criteria": [...]}``).
    Criteria with a ``rule`` are computed, not judged, and are left out."""
    from pydantic import ValidationError

    if not path.is_file():
        raise UserError(f"--rubric: {path} does not exist")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except ValueError as exc:
        raise UserError(f"{path}: not valid JSON ({exc})") from None
    entries = data.get("criteria") if isinstance(data, dict) else data
    if not isinstance(entries, list):
        raise UserError(f"{path}: expected a list of criteria, or an object with a 'criteria' list")
    criteria = []
    for index, entry in enumerate(entries):
        if isinstance(entry, dict) and entry.get("rule"):
            continue
        try:
            criteria.append(CriterionToGrade.model_validate(entry))
        except ValidationError as exc:
            raise UserError(validation_message(f"{path}: criteria[{index}]", exc)) from None
    names = [c.name for c in criteria]
    if len(set(names)) != len(names):
        raise UserError(f"{path}: criterion names must be unique, got {names}")
    if not criteria:
        raise UserError(f"{path}: no criterion for a judge to grade (criteria with a rule are computed, not judged)")
    return criteria


def _grade_responses(judge, criteria: list[CriterionToGrade], items: list[Any],
                     responses_of: Callable[[Any], tuple[str, list[str]]]) -> list[list[dict]]:
    """Per item, per response (in its order): ``{criterion: {score, confidence, error, ...}}``; one batch."""
    from rlcore.judges.debias import grade_rubric

    to_grade, owners = [], []
    for index, item in enumerate(items):
        prompt, responses = responses_of(item)
        for response in responses:
            to_grade.append(ResponseToGrade(prompt=prompt, response=response))
            owners.append(index)
    graded: list[list[dict]] = [[] for _ in items]
    for owner, by_name in zip(owners, grade_rubric(judge, to_grade, criteria)):
        graded[owner].append({name: {"score": r.verdict, "confidence": r.confidence, "error": r.error,
                                     "rendered_prompt": r.rendered_prompt, "raw_reply": r.raw_reply}
                              for name, r in by_name.items()})
    return graded


def _judge_lines(args: argparse.Namespace, command: str, items: list[Any],
                 judge_chunk: Callable[[Any, list[Any]], list[dict]],
                 responses_of: Callable[[Any], tuple[str, list[str]]] | None = None) -> int:
    """Judge ``items`` in chunks with ``judge_chunk(judge, chunk) -> one JSON-able dict per item`` (each with
    ``error`` None when it has a result) and write them as JSON lines, with progress when ``--output`` is given.
    With ``--rubric`` (commands that pass ``responses_of(item) -> (prompt, responses)``), every response is
    graded on the rubric's criteria too (``criterion_scores``)."""
    from rlcore.events import emit_progress

    rubric = getattr(args, "rubric", None)
    criteria = read_rubric_criteria(rubric) if rubric is not None and responses_of is not None else None
    judge = build_judge(args)
    out: TextIO = open(args.output, "w", encoding="utf-8") if args.output else sys.stdout
    chunk = max(1, _CHUNK_PER_SLOT * getattr(args, "max_concurrency", 1))
    labelled = biased = 0
    outcomes: list[str] = []
    try:
        for start in range(0, len(items), chunk):
            batch = items[start:start + chunk]
            lines = judge_chunk(judge, batch)
            if criteria:
                for line, scores in zip(lines, _grade_responses(judge, criteria, batch, responses_of)):
                    line["criterion_scores"] = scores
            for line in lines:
                labelled += line.get("error") is None
                biased += bool(line.get("position_bias"))
                if "outcome" in line:
                    outcomes.append(line["outcome"])
                out.write(json.dumps(line) + "\n")
            out.flush()
            if args.output:  # stdout carries the results otherwise; progress would mix with them
                emit_progress(min(start + chunk, len(items)), len(items))
    finally:
        if args.output:
            out.close()
    print(f"judge {command}: {labelled}/{len(items)} labelled, {biased} with position bias, "
          f"{len(items) - labelled} without a label", file=sys.stderr)
    if outcomes:  # pairwise and rank: what the labels are worth, and a warning when most contradict themselves
        from rlcore.judges.outcomes import summarize_outcomes

        summary = summarize_outcomes(outcomes, mode="pairwise" if command == "pairwise" else "ranking")
        print(f"judge {command}: {summary.describe()}", file=sys.stderr)
        if summary.warning:
            print(f"judge {command}: WARNING: {summary.warning}", file=sys.stderr)
    return 0


def _dump_pairs(judge, pairs: list[Any]) -> list[dict]:
    from rlcore.judges.debias import compare_both_orders

    return [label.model_dump(mode="json") for label in compare_both_orders(judge, pairs)]


def _dump_rankings(judge, requests: list[Any]) -> list[dict]:
    from rlcore.judges.debias import rank_both_orders

    return [ranking.model_dump(mode="json") for ranking in rank_both_orders(judge, requests)]


def _dump_grades(judge, items: list[GradingItem]) -> list[dict]:
    """All items x their criteria in one batch; per item, every criterion's score or its own error."""
    from rlcore.judges.debias import grade_rubric

    # Items sharing a rubric go in one grade_rubric call; most files have a single rubric.
    groups: dict[tuple, list[int]] = {}
    for index, item in enumerate(items):
        groups.setdefault(tuple(item.criteria), []).append(index)
    results: list[dict | None] = [None] * len(items)
    for criteria, indices in groups.items():
        graded = grade_rubric(judge, [items[i].response for i in indices], list(criteria))
        for index, by_name in zip(indices, graded):
            scores = {name: {"score": r.verdict, "confidence": r.confidence, "error": r.error,
                             "rendered_prompt": r.rendered_prompt, "raw_reply": r.raw_reply}
                      for name, r in by_name.items()}
            failed = [f"{name}: {s['error'] or 'no score'}" for name, s in scores.items() if s["score"] is None]
            results[index] = {"request_id": items[index].response.request_id,
                              "judge": next(iter(by_name.values())).judge, "criteria": scores,
                              "error": "; ".join(failed) or None}
    return results


def _dump_steps(judge, items: list[StepItem], scale: str) -> list[dict]:
    """Every step of every item in one batch (the backend's bounded concurrency and retries apply to all)."""
    from rlcore.judges.base import StepGradeRequest

    requests = [StepGradeRequest(request_id=f"{item.request_id}:{k}", prompt=item.prompt, steps=item.steps, index=k,
                                 scale_min=STEP_SCALES[item.scale or scale][0],
                                 scale_max=STEP_SCALES[item.scale or scale][1])
                for item in items for k in range(len(item.steps))]
    if not hasattr(judge, "grade_steps"):
        raise UserError(f"{judge!r} cannot grade steps (it has no prompt templates)")
    results = iter(judge.grade_steps(requests))
    return [step_line(item, [next(results) for _ in item.steps], item.scale or scale) for item in items]


def run_pairwise(args: argparse.Namespace) -> int:
    return _judge_lines(args, "pairwise", read_pairs(args.input), _dump_pairs,
                        lambda pair: (pair.prompt, [pair.response_a, pair.response_b]))


def run_rank(args: argparse.Namespace) -> int:
    return _judge_lines(args, "rank", read_rankings(args.input), _dump_rankings,
                        lambda request: (request.prompt, list(request.responses)))


def run_grade(args: argparse.Namespace) -> int:
    return _judge_lines(args, "grade", read_gradings(args.input), _dump_grades)


def run_steps(args: argparse.Namespace) -> int:
    return _judge_lines(args, "steps", read_step_items(args.input),
                        lambda judge, batch: _dump_steps(judge, batch, args.scale))


def run_serve_test(args: argparse.Namespace) -> int:
    from rlcore.judges.testing_server import serve_test

    return serve_test(port=args.port, model=args.model, reply=args.reply, latency_s=args.latency,
                      capacity=args.capacity, host=args.host, position_bias=args.position_bias)


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "judge", help="LM judging: pairwise labels and rankings in both orders, rubric grades, a test server")
    commands = parser.add_subparsers(dest="judge_command", metavar="JUDGE_COMMAND")
    parser.set_defaults(handler=lambda args: parser.print_help() or 2)

    for name, run, help_text, input_help in (
            ("pairwise", run_pairwise, "judge pairs in both orders; JSON lines out",
             "pairs.jsonl: prompt, response_a, response_b"),
            ("rank", run_rank, "rank N responses as given and reversed; JSON lines out",
             "rankings.jsonl: prompt, responses"),
            ("grade", run_grade, "score responses on rubric criteria; JSON lines out",
             "grades.jsonl: prompt, response, criteria")):
        command = _add_judging_options(commands.add_parser(name, help=help_text), input_help)
        if name != "grade":
            command.add_argument("--rubric", type=Path,
                                 help="JSON criteria (or a rubric): also grade every response on them")
        command.set_defaults(handler=run)

    steps = _add_judging_options(commands.add_parser(
        "steps", help="grade every step of each response (pre-labels for step items); JSON lines out"),
        "steps.jsonl: prompt, steps (a list)")
    steps.add_argument("--scale", choices=sorted(STEP_SCALES), default="ternary",
                       help="ternary: -1 bad / 0 neutral / 1 good (default); score5: 1-5")
    steps.set_defaults(handler=run_steps)

    serve = commands.add_parser("serve-test", help="serve a loopback OpenAI-compatible test endpoint")
    serve.add_argument("--port", type=int, default=8011, help="port to listen on (0: any free port)")
    serve.add_argument("--host", default="127.0.0.1", help="address to bind (default loopback only)")
    serve.add_argument("--model", help="a local model directory (or hub id) to answer with")
    serve.add_argument("--reply", default="Verdict: A\nStrength: 1", help="fixed reply when no --model")
    serve.add_argument("--latency", type=float, default=0.0, help="seconds each request takes")
    serve.add_argument("--capacity", type=int, default=None, help="requests served at once (more queue)")
    serve.add_argument("--position-bias", choices=["first", "second"],
                       help="answer as a position-biased judge: always the response shown first (or second)")
    serve.set_defaults(handler=run_serve_test)


def _add_judging_options(parser: argparse.ArgumentParser, input_help: str) -> argparse.ArgumentParser:
    """The options every judging command takes: input/output, backend, templates, key, limits."""
    parser.add_argument("--input", type=Path, required=True, help=input_help)
    parser.add_argument("--model", required=True, help="model name at the endpoint, or a path/hub id with --local")
    parser.add_argument("--endpoint", help="OpenAI-compatible API root, e.g. http://127.0.0.1:8000/v1")
    parser.add_argument("--local", action="store_true", help="run --model in-process with transformers")
    parser.add_argument("--output", type=Path, help="write JSON lines here (default: stdout)")
    parser.add_argument("--templates", type=Path, help="JSON/YAML judge templates (default: built-in)")
    parser.add_argument("--api-key-env", help="environment variable that holds the API key")
    parser.add_argument("--api-key-file", type=Path,
                        help="file holding the API key; deleted once read (keeps the key off the command line)")
    parser.add_argument("--max-concurrency", type=int, default=8, help="requests in flight at once")
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds per attempt")
    parser.add_argument("--max-retries", type=int, default=4, help="retries on timeouts, 5xx, 429")
    parser.add_argument("--max-tokens", type=int, default=512, help="most tokens per judge reply")
    parser.add_argument("--no-logprobs", action="store_true", help="do not ask the endpoint for logprobs")
    parser.add_argument("--device", help="with --local: cuda, cpu, ... (default: GPU if any)")
    parser.add_argument("--batch-size", type=int, default=8, help="with --local: prompts per generate call")
    return parser
