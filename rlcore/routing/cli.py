"""``python -m rlcore routing ...``: features, performance model and routing plans from files.

- ``routing features comparisons.jsonl -o features.json [--vectors pairs.npy]`` — raw + binned
  features of each comparison (one JSON object per line: comparison_id, prompt, response_a,
  response_b, optional tags / judge_position_disagreement / judge_confidence / reward_margins);
  with ``--vectors`` also the pair vectors the proxy reward model uses (``features.pair_vectors``:
  emb(A) - emb(B), or a hashed bag of words with ``--no-embeddings``; plus the log-length difference).
  The file is read a chunk at a time (``--chunk-size``): texts are never all held at once.
- ``routing fit features.json labels.jsonl pairs.npy -o model.json`` — simulate mixes on a pool
  with both labels (labels.jsonl: comparison_id, human, lm as A / B / tie) and fit the model.
- ``routing plan features.json --budget 25% --strategy topk --model model.json -o plan.json`` —
  topk / optimal_pos only when the model shows a gain over random on held-out pilot halves (else
  ``--fallback``, with the reason on stderr and in the plan's ``fallback_reason`` / ``evidence``).
  With ``--comparisons`` the positional file is a comparisons JSONL: features are built first, as
  ``routing features`` does (``--no-embeddings``, ``--features-output``), then planned — the webapp's
  background plan for pools above ROUTING_INLINE_POOL runs this, with ``--decisions-output`` (one
  RoutingReason a line, so that the recorder reads a 1M-row plan in batches).
- ``routing tag --endpoint URL --model NAME --categories math,code,other --input prompts.jsonl
  --output tags.jsonl`` — prompt category tags from an LM (prompts.jsonl: id, prompt; one line out
  per prompt: id, tags, error, raw_reply).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from pydantic import ValidationError

from rlcore.errors import UserError, validation_message
from rlcore.jsonl import iter_jsonl_objects, read_jsonl_objects
from rlcore.events import emit_artifact, emit_metric, emit_progress

LABEL_VALUES = {"A": 1.0, "B": 0.0, "tie": 0.5}


def iter_comparisons(path: Path):
    """RoutingComparison rows from JSONL, one line at a time (a 1M-row file is never held whole); a bad
    row raises UserError naming file, line and field."""
    from rlcore.routing.features import RoutingComparison

    for lineno, row in iter_jsonl_objects(path):
        try:
            yield RoutingComparison.model_validate(row)
        except ValidationError as exc:
            raise UserError(validation_message(f"{path}:{lineno}", exc)) from exc


def read_comparisons(path: Path):
    """All RoutingComparison rows of a JSONL file (see :func:`iter_comparisons`)."""
    return list(iter_comparisons(path))


def read_labelled_pool(path: Path, ids: list[str]):
    """Human and LM labels in the feature table's order; every comparison needs both."""
    from rlcore.routing.predictor import LabelledPool

    labels: dict[str, tuple[float, float]] = {}
    for lineno, row in read_jsonl_objects(path):
        cid = row.get("comparison_id")
        pair = []
        for field in ("human", "lm"):
            value = row.get(field)
            if value not in LABEL_VALUES:
                raise UserError(f"{path}:{lineno}: field {field!r} must be A, B or tie, got {value!r}")
            pair.append(LABEL_VALUES[value])
        labels[str(cid)] = (pair[0], pair[1])
    missing = [i for i in ids if i not in labels]
    if missing:
        raise UserError(f"{path}: no human+LM labels for comparison {missing[0]!r} ({len(missing)} missing)")
    return LabelledPool(comparison_ids=ids, human=[labels[i][0] for i in ids], lm=[labels[i][1] for i in ids])


def _load_model(path: Path, cls):
    try:
        return cls.model_validate_json(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise UserError(f"{path}: cannot read ({exc.strerror})") from exc
    except ValidationError as exc:
        raise UserError(validation_message(str(path), exc)) from exc


def _feature_table(args: argparse.Namespace, comparisons_path: Path):
    """Stream comparisons into a feature table, a chunk at a time; pair vectors too with ``--vectors``."""
    import numpy as np

    from rlcore.routing.features import (FeatureTable, build_feature_table, embed_texts, extract_features_chunked,
                                         pair_vectors)

    embed = None
    if not args.no_embeddings:
        def embed(texts):
            return embed_texts(texts, args.embedding_model, batch_size=args.batch_size)
    vectors: list = []
    # A cheap first pass (no parsing) gives the progress events a total.
    try:
        with comparisons_path.open(encoding="utf-8") as handle:
            total = sum(1 for line in handle if line.strip())
    except OSError as exc:
        raise UserError(f"{comparisons_path}: cannot read the file ({exc.strerror})") from None
    done = 0

    def on_chunk(chunk, embeddings):
        nonlocal done
        if getattr(args, "vectors", None):
            vectors.append(pair_vectors(chunk, embeddings))
        done += len(chunk)
        emit_progress(done, total)

    raw = list(extract_features_chunked(iter_comparisons(comparisons_path), chunk_size=args.chunk_size,
                                        embed=embed, on_chunk=on_chunk))
    bins = _load_model(Path(args.bins_from), FeatureTable).bins if args.bins_from else None
    table = build_feature_table(raw, bins, n_bins=args.bins)
    if getattr(args, "vectors", None):
        np.save(args.vectors, np.concatenate(vectors) if vectors else pair_vectors([]))
        emit_artifact("pair_vectors", args.vectors, n=len(raw))
    return table


def run_features(args: argparse.Namespace) -> int:
    table = _feature_table(args, Path(args.comparisons))
    Path(args.output).write_text(table.model_dump_json(), encoding="utf-8")
    emit_artifact("routing_features", args.output, n=len(table.raw))
    return 0


def run_fit(args: argparse.Namespace) -> int:
    import numpy as np

    from rlcore.routing.features import FeatureTable
    from rlcore.routing.predictor import fit_routing_model

    table = _load_model(Path(args.features), FeatureTable)
    pool = read_labelled_pool(Path(args.labels), table.ids)
    try:
        vectors = np.load(args.vectors)
    except (OSError, ValueError) as exc:
        raise UserError(f"{args.vectors}: cannot read pair vectors ({exc})") from exc
    if len(vectors) != len(table.ids):
        raise UserError(f"{args.vectors}: {len(vectors)} pair vectors for the {len(table.ids)} comparisons of "
                        f"{args.features}")
    model = fit_routing_model(
        table.matrix(), table.feature_names, pool, vectors, n_simulations=args.simulations, kind=args.kind,
        ridge=args.ridge, seed=args.seed,
        progress=lambda done, total: emit_progress(done, total) if done % 10 == 0 or done == total else None,
    )
    if model.holdout_r2 is not None:
        emit_metric(args.simulations, "routing/regressor_r2", model.holdout_r2)
    Path(args.output).write_text(model.model_dump_json(indent=2), encoding="utf-8")
    emit_artifact("routing_model", args.output, kind=args.kind)
    return 0


def run_plan(args: argparse.Namespace) -> int:
    from rlcore.routing.features import FeatureTable
    import sys

    from rlcore.routing.predictor import PerformanceModel, RoutingGate, parse_budget, plan_routing, plan_summary

    if args.comparisons:
        table = _feature_table(args, Path(args.features))
        if args.features_output:
            Path(args.features_output).write_text(table.model_dump_json(), encoding="utf-8")
    else:
        table = _load_model(Path(args.features), FeatureTable)
    model = _load_model(Path(args.model), PerformanceModel) if args.model else None
    budget = parse_budget(args.budget) if args.budget is not None else None
    gate = RoutingGate(min_pilot=args.min_pilot, min_r2=args.min_r2, fallback=args.fallback)
    plan = plan_routing(table, budget, args.strategy, model=model, seed=args.seed, gate=gate)
    # People read this line; the JSON below is for scripts.
    print(f"routing plan: {plan_summary(plan)}", file=sys.stderr)
    if args.decisions_output:
        # One reason a line, for a recorder that reads a 1M pool in batches; the plan JSON keeps the summary only.
        with open(args.decisions_output, "w", encoding="utf-8") as out:
            for reason in plan.reasons:
                out.write(reason.model_dump_json() + "\n")
        emit_artifact("routing_decisions", args.decisions_output, n=len(plan.reasons))
        plan = plan.model_copy(update={"reasons": [], "human_ids": [], "lm_ids": []})
    text = plan.model_dump_json(indent=2)
    if args.output:
        Path(args.output).write_text(text, encoding="utf-8")
        emit_artifact("routing_plan", args.output, n_human=plan.n_human, n_lm=plan.n_lm)
    else:
        print(text)
    return 0


def run_embed(args: argparse.Namespace) -> int:
    """Embed texts (``{"id", "text"}`` lines) in batches; write ``vectors.npy`` and the ids beside it."""
    import numpy as np

    from rlcore.routing.features import embed_texts

    rows = read_jsonl_objects(args.input, 'a JSON object with "id" and "text"')
    for number, row in rows:
        if "id" not in row or not isinstance(row.get("text"), str):
            raise UserError(f"{args.input}:{number}: expected \"id\" and a string \"text\"")
    if not rows:
        raise UserError(f"{args.input}: no texts to embed")
    batches = []
    for start in range(0, len(rows), args.batch_size):
        chunk = [row["text"] for _, row in rows[start:start + args.batch_size]]
        batches.append(np.asarray(embed_texts(chunk, args.embedding_model, batch_size=args.batch_size), np.float32))
        emit_progress(min(start + args.batch_size, len(rows)), len(rows))
    output = Path(args.output)
    np.save(output, np.concatenate(batches))
    ids_path = output.with_suffix(".ids.json")
    ids_path.write_text(json.dumps([row["id"] for _, row in rows]), encoding="utf-8")
    emit_artifact("embeddings", str(output), ids=str(ids_path), count=len(rows))
    return 0


def _tagging_backend(args: argparse.Namespace):
    if args.local:
        from rlcore.judges.local_hf import LocalHFJudge, LocalHFSettings

        return LocalHFJudge(LocalHFSettings(model=args.model, device=args.device, batch_size=args.batch_size,
                                            max_new_tokens=args.max_tokens))
    if not args.endpoint:
        raise UserError("--endpoint: give the server's API root (e.g. http://127.0.0.1:8000/v1), or --local")
    from rlcore.judges.cli import read_api_key_file
    from rlcore.judges.openai_compat import OpenAICompatJudge, OpenAICompatSettings

    api_key = read_api_key_file(args.api_key_file) if args.api_key_file else None
    return OpenAICompatJudge(OpenAICompatSettings(
        base_url=args.endpoint, model=args.model, api_key=api_key, api_key_env=args.api_key_env,
        max_concurrency=args.max_concurrency, timeout_s=args.timeout, max_retries=args.max_retries,
        max_tokens=args.max_tokens, logprobs=False))


def run_tag(args: argparse.Namespace) -> int:
    """Tag each prompt of ``--input`` (``{"id", "prompt"}`` lines) with the listed categories."""
    import sys

    from rlcore.routing.tagging import parse_categories, tag_prompts

    categories = parse_categories(args.categories)
    rows = read_jsonl_objects(args.input, 'a JSON object with "id" and "prompt"')
    prompts = []
    for number, row in rows:
        if "id" not in row:
            raise UserError(f"{args.input}:{number}: field 'id' is missing")
        if not isinstance(row.get("prompt"), str):
            raise UserError(f"{args.input}:{number}: field 'prompt' must be a string")
        prompts.append((str(row["id"]), row["prompt"]))
    if not prompts:
        raise UserError(f"{args.input}: no prompts to tag")
    backend = _tagging_backend(args)
    chunk = max(1, 4 * args.max_concurrency)
    tagged = 0
    with open(args.output, "w", encoding="utf-8") as out:
        def progress(done: int, total: int) -> None:
            out.flush()
            emit_progress(done, total)

        for result in tag_prompts(backend, prompts, categories, multi_label=args.multi_label, chunk=chunk,
                                  progress=progress):
            tagged += bool(result.tags)
            out.write(json.dumps(result.model_dump(mode="json"), ensure_ascii=False) + "\n")
    emit_artifact("prompt_tags", str(args.output), n=len(prompts), tagged=tagged, categories=categories)
    print(f"routing tag: {tagged}/{len(prompts)} prompts tagged, {len(prompts) - tagged} without a tag",
          file=sys.stderr)
    return 0


def register(subparsers) -> None:
    parser = subparsers.add_parser("routing", help="route comparisons to humans or an LM judge")
    sub = parser.add_subparsers(dest="routing_command", metavar="STEP", required=True)

    p = sub.add_parser("features", help="per-comparison features, binned")
    p.add_argument("comparisons", help="JSONL of comparisons")
    p.add_argument("-o", "--output", required=True, help="feature table JSON to write")
    p.add_argument("--vectors", default=None, help="also write pair vectors emb(A)-emb(B) to this .npy")
    p.add_argument("--no-embeddings", action="store_true", help="skip MiniLM (no cosine_sim, no vectors)")
    p.add_argument("--embedding-model", default=None, help="hub id or local path (default: shipped all-MiniLM-L6-v2)")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--bins", type=int, default=3, help="quantile bins per continuous feature")
    p.add_argument("--bins-from", default=None, help="reuse the bins of an earlier feature table JSON")
    p.add_argument("--chunk-size", type=int, default=2000, help="comparisons read (and embedded) at a time")
    p.set_defaults(handler=run_features)

    p = sub.add_parser("embed", help="sentence embeddings of texts (MiniLM by default), for routing features")
    p.add_argument("--input", required=True, help='JSONL of {"id", "text"}')
    p.add_argument("--output", required=True, help=".npy to write (ids go to <output>.ids.json)")
    p.add_argument("--embedding-model", default=None, help="hub id or local path (default: shipped all-MiniLM-L6-v2)")
    p.add_argument("--batch-size", type=int, default=64)
    p.set_defaults(handler=run_embed)

    p = sub.add_parser("fit", help="fit the performance-prediction model on a pool with both labels")
    p.add_argument("features", help="feature table JSON of the labelled pool")
    p.add_argument("labels", help="JSONL: comparison_id, human, lm (A / B / tie)")
    p.add_argument("vectors", help=".npy pair vectors, one row per comparison in the table's order")
    p.add_argument("-o", "--output", required=True, help="model JSON to write")
    p.add_argument("--simulations", type=int, default=300)
    p.add_argument("--kind", choices=["linear", "quadratic"], default="linear")
    p.add_argument("--ridge", type=float, default=1.0)
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(handler=run_fit)

    p = sub.add_parser("plan", help="route a pool for a human budget")
    p.add_argument("features", help="feature table JSON of the pool to route (comparisons JSONL with --comparisons)")
    p.add_argument("--comparisons", action="store_true",
                   help="the file is a comparisons JSONL: build its features first, as 'routing features' does")
    p.add_argument("--features-output", default=None, help="with --comparisons: also write the feature table here")
    p.add_argument("--no-embeddings", action="store_true", help="with --comparisons: skip MiniLM (no cosine_sim)")
    p.add_argument("--embedding-model", default=None, help="with --comparisons: hub id or local path")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--bins", type=int, default=3, help="with --comparisons: quantile bins per continuous feature")
    p.add_argument("--bins-from", default=None, help="with --comparisons: reuse an earlier table's bins")
    p.add_argument("--chunk-size", type=int, default=2000, help="with --comparisons: comparisons read at a time")
    p.add_argument("--budget", default=None, help="share (0.25, 25%%) or count (300); optional for optimal_pos")
    p.add_argument("--strategy", choices=["topk", "optimal_pos", "uncertainty", "random"], default="topk")
    p.add_argument("--model", default=None, help="performance model JSON (topk, optimal_pos)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--fallback", choices=["random", "uncertainty"], default="random",
                   help="baseline when the model cannot show a gain over random (topk, optimal_pos)")
    p.add_argument("--min-pilot", type=int, default=100, help="fewest pilot comparisons behind a learned plan")
    p.add_argument("--min-r2", type=float, default=0.0, help="R² cross-validated on the pilot must be above this")
    p.add_argument("-o", "--output", default=None, help="plan JSON to write (default: stdout)")
    p.add_argument("--decisions-output", default=None,
                   help="write each comparison's route and reasons here (JSONL, pool order) instead of in the plan "
                        "JSON, whose reasons, human_ids and lm_ids are then empty")
    p.set_defaults(handler=run_plan)

    p = sub.add_parser("tag", help="prompt category tags from an LM (the category=<name> routing feature)")
    p.add_argument("--input", required=True, help='JSONL of {"id", "prompt"}')
    p.add_argument("--output", required=True, help="JSONL to write: id, tags, error, raw_reply per prompt")
    p.add_argument("--categories", required=True, help="comma-separated category names, e.g. math,code,other")
    p.add_argument("--multi-label", action="store_true", help="allow several categories per prompt")
    p.add_argument("--model", required=True, help="model name at the endpoint, or a path/hub id with --local")
    p.add_argument("--endpoint", help="OpenAI-compatible API root, e.g. http://127.0.0.1:8000/v1")
    p.add_argument("--local", action="store_true", help="run --model in-process with transformers")
    p.add_argument("--api-key-env", help="environment variable that holds the API key")
    p.add_argument("--api-key-file", type=Path, help="file holding the API key; deleted once read")
    p.add_argument("--max-concurrency", type=int, default=8, help="requests in flight at once")
    p.add_argument("--timeout", type=float, default=60.0, help="seconds per attempt")
    p.add_argument("--max-retries", type=int, default=4, help="retries on timeouts, 5xx, 429")
    p.add_argument("--max-tokens", type=int, default=64, help="most tokens per reply")
    p.add_argument("--device", help="with --local: cuda, cpu, ... (default: GPU if any)")
    p.add_argument("--batch-size", type=int, default=8, help="with --local: prompts per generate call")
    p.set_defaults(handler=run_tag)
