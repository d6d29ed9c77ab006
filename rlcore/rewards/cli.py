"""``python -m rlcore reward``: score rows with a spec, or check a spec.

- ``reward score --spec SPEC --input FILE.jsonl`` prints one JSON line per row:
  ``{"index": 0, "total": 0.8, "raw_total": 0.8, "components": {"rules": 1.0, ...}}``;
- ``reward check --spec SPEC [--columns a,b]`` prints each problem on its own line and exits 2 if any;
- ``reward serve --spec SPEC [--host --port --token-env/--token-file]`` scores batches over HTTP
  (:mod:`rlcore.rewards.serve`).
"""

from __future__ import annotations

import sys
from pathlib import Path

from rlcore.events import emit_artifact
from rlcore.jsonl import read_jsonl_objects


def read_jsonl(path: str | Path) -> list[dict]:
    """Rows of a JSONL file; a bad line raises UserError naming the file and line."""
    return [row for _, row in read_jsonl_objects(path, "a JSON object with 'prompt' and 'completion'")]


def run_score(spec_path: str, input_path: str, judge_name: str | None, output_path: str | None = None) -> int:
    from rlcore.rewards.check import load_spec
    from rlcore.rewards.engine import RewardEngine, rows_to_batch

    rows = read_jsonl(input_path)
    columns = sorted({k for row in rows for k in row} - {"prompt", "completion", "response", "completion_ids"})
    spec = load_spec(spec_path, dataset_columns=columns if rows else None)
    judge = None
    if judge_name == "deterministic":
        from rlcore.judges.deterministic import DeterministicJudge

        judge = DeterministicJudge()
    engine = RewardEngine(spec, judge=judge, checked=True)  # load_spec checked it against the rows' columns
    out = open(output_path, "w", encoding="utf-8") if output_path else sys.stdout
    try:
        for scored in engine.score_batch(rows_to_batch(rows, source=f"{input_path}, line")):
            out.write(scored.model_dump_json() + "\n")
    finally:
        if output_path:
            out.close()
    if output_path:
        emit_artifact("reward_scores", output_path, rows=len(rows))
    return 0


def run_check(spec_path: str, columns: str | None) -> int:
    from rlcore.rewards.check import check_spec, load_spec

    spec = load_spec(spec_path, validate=False)
    dataset_columns = [c.strip() for c in columns.split(",") if c.strip()] if columns else None
    problems = check_spec(spec, dataset_columns)
    for problem in problems:
        print(f"{spec_path}: {problem}")
    if problems:
        print(f"{len(problems)} problem(s) in {spec_path}", file=sys.stderr)
        return 2
    print(f"{spec_path}: ok ({len(spec.components)} components, normalization {spec.normalization})")
    return 0


def register(subparsers) -> None:
    parser = subparsers.add_parser("reward", help="score rows with a reward spec, or check a spec")
    commands = parser.add_subparsers(dest="reward_command", metavar="SUBCOMMAND")
    parser.set_defaults(handler=lambda args: parser.print_help() or 2)

    score = commands.add_parser("score", help="print each row's total and components as JSON lines")
    score.add_argument("--spec", required=True, help="reward spec file (YAML or JSON)")
    score.add_argument("--input", required=True, help="JSONL rows with 'prompt', 'completion' and dataset columns")
    score.add_argument("--judge", choices=["deterministic"], default=None,
                       help="judge for rubric_judge components (model-backed judges come from the judges package)")
    score.add_argument("--output", default=None, help="write the scored rows here (JSONL) instead of stdout")
    score.set_defaults(handler=lambda args: run_score(args.spec, args.input, args.judge, args.output))

    serve = commands.add_parser("serve", help="score batches over HTTP (JSON /score, OpenRLHF /get_reward, /health)")
    serve.add_argument("--spec", required=True, help="reward spec file (YAML or JSON)")
    serve.add_argument("--host", default="127.0.0.1", help="address to bind; beyond loopback a token is required")
    serve.add_argument("--port", type=int, default=0, help="port (0: a free one, printed when listening)")
    serve.add_argument("--token-env", default=None, help="environment variable holding the bearer token")
    serve.add_argument("--token-file", default=None, help="file holding the bearer token")
    serve.add_argument("--max-rows", type=int, default=1024, help="most rows one request may hold")
    serve.add_argument("--max-body-bytes", type=int, default=16 * 1024 * 1024, help="largest request body")
    serve.add_argument("--max-concurrency", type=int, default=None,
                       help="batches scored at once (default: 1 with a reward model, else 4); others wait")
    serve.add_argument("--label-column", default=None,
                       help="the column OpenRLHF's 'labels' fill (e.g. a verifier's reference column)")
    serve.add_argument("--withdrawn-file", default=None,
                       help="JSON {model path: reason} of reward models withdrawn while served (the webapp writes it)")
    serve.add_argument("--judge", choices=["deterministic"], default=None, help="judge for rubric_judge components")
    serve.add_argument("--log-seconds", type=float, default=10.0, help="seconds between the served-requests lines")

    def run_serve(args):
        from rlcore.rewards.serve import run_serve

        return run_serve(args)

    serve.set_defaults(handler=run_serve)

    check = commands.add_parser("check", help="validate a spec and explain each problem (exit 2 if any)")
    check.add_argument("--spec", required=True, help="reward spec file (YAML or JSON)")
    check.add_argument("--columns", default=None, help="comma-separated dataset columns the spec may read")
    check.set_defaults(handler=lambda args: run_check(args.spec, args.columns))
