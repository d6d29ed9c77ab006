"""``python -m rlcore analysis``: reward analysis on exported files, printed as JSON.

- ``analysis starc NAME=SCORES.jsonl ... [--labels PAIRS.jsonl] [--drill A,B --top 20]``: STARC
  matrix, per-prompt rank correlations, agreement with the labels, the drill-down of two sources;
- ``analysis evaluate --scores NAME=SCORES.jsonl --labels PAIRS.jsonl [--group annotator --group length ...]``;
- ``analysis audit --labels PAIRS.jsonl MEMBER=SCORES.jsonl ... [--z 1 --t 0]``;
- ``analysis raters --labels LABELS.jsonl [--gold GOLD.jsonl]``: Dawid-Skene and gold scores;
- ``analysis overopt --samples SCORED.jsonl [--rule NAME ...]``: proxy and gold against sqrt(KL) per
  checkpoint, the gold peak, symptoms and the largest proxy - gold gaps (docs/rounds.md);
- ``analysis overopt-score --spec SCORE.yaml``: generate on a held-out prompt set per checkpoint, k1 KL from
  the start policy, proxy (the run's spec) and gold scores, into the SampleScore JSONL ``overopt`` reads.

Score files have rows ``{"prompt_id", "response_id", "score"}``; docs/analysis.md lists every input.
"""

from __future__ import annotations

import json


def _print(payload: dict) -> int:
    print(json.dumps(payload, indent=2))
    return 0


def run_starc(args) -> int:
    from rlcore.analysis.inputs import read_labelled_pairs, read_score_sources
    from rlcore.analysis.starc import compare_sources, drill_down
    from rlcore.errors import UserError

    tables = read_score_sources(args.scores)
    pairs = read_labelled_pairs(args.labels) if args.labels else None
    payload = compare_sources(tables, pairs).model_dump()
    if args.drill:
        names = [n.strip() for n in args.drill.split(",")]
        if len(names) != 2:
            raise UserError(f"--drill: expected two source names separated by a comma, got {args.drill!r}")
        payload["drill_down"] = drill_down(tables, names[0], names[1], top=args.top).model_dump()
    return _print(payload)


def run_evaluate(args) -> int:
    from rlcore.analysis.evaluation import evaluate_source
    from rlcore.analysis.inputs import read_labelled_pairs, read_score_sources

    (table,) = read_score_sources([args.scores])
    evaluation = evaluate_source(table, read_labelled_pairs(args.labels), groups=args.group or [],
                                 min_pairs=args.min_pairs, bins=args.bins)
    return _print(evaluation.model_dump())


def run_audit(args) -> int:
    from rlcore.analysis.audit import audit_from_scores
    from rlcore.analysis.inputs import read_labelled_pairs, read_score_sources

    audit = audit_from_scores(read_score_sources(args.members), read_labelled_pairs(args.labels), z=args.z, t=args.t)
    payload = audit.model_dump()
    if args.flagged_only:
        payload["pairs"] = [p for p in payload["pairs"] if p["flag"] != "ok"]
    return _print(payload)


def run_raters(args) -> int:
    from rlcore.analysis.inputs import read_gold, read_rater_labels
    from rlcore.analysis.raters import RaterLabel, fit_dawid_skene, score_gold

    rows, skipped = read_rater_labels(args.labels)
    items, raters, values = zip(*rows)
    fit = fit_dawid_skene(item_ids=items, raters=raters, values=values, max_iter=args.max_iter)
    payload = {"labels_skipped": skipped, "dawid_skene": fit.model_dump(exclude={"items"} if not args.items else None)}
    if args.gold:
        labels = [RaterLabel(item_id=i, rater=r, label=v) for i, r, v in rows]
        payload["gold"] = score_gold(labels, read_gold(args.gold)).model_dump()
    return _print(payload)


def run_overopt(args) -> int:
    from rlcore.analysis.overoptimization import OveroptSettings, analyse_overoptimization, read_samples

    settings = OveroptSettings(rule_components=args.rule or [], top_gaps=args.top)
    return _print(analyse_overoptimization(read_samples(args.samples), settings).model_dump())


def run_overopt_score(args) -> int:
    from rlcore.analysis.checkpoint_scoring import load_score_spec, score_checkpoints

    return _print(score_checkpoints(load_score_spec(args.spec)))


def register(subparsers) -> None:
    parser = subparsers.add_parser("analysis", help="compare rewards (STARC), evaluate, audit labels, model raters")
    commands = parser.add_subparsers(dest="analysis_command", metavar="SUBCOMMAND")
    parser.set_defaults(handler=lambda args: parser.print_help() or 2)

    starc = commands.add_parser("starc", help="STARC distances, rank correlation and label agreement of sources")
    starc.add_argument("scores", nargs="+", help="NAME=FILE.jsonl (or FILE.jsonl) per source: prompt_id, response_id, score")
    starc.add_argument("--labels", default=None, help="labelled pairs (JSONL) for each source's agreement")
    starc.add_argument("--drill", default=None, help="A,B: the response pairs sources A and B order most differently")
    starc.add_argument("--top", type=int, default=20, help="pairs in the drill-down (default 20)")
    starc.set_defaults(handler=run_starc)

    evaluate = commands.add_parser("evaluate", help="held-out accuracy per group and a reliability diagram")
    evaluate.add_argument("--scores", required=True, help="NAME=FILE.jsonl: the source's scores")
    evaluate.add_argument("--labels", required=True, help="held-out labelled pairs (JSONL)")
    evaluate.add_argument("--group", action="append", help="annotator, length, or a row/provenance key (repeatable)")
    evaluate.add_argument("--min-pairs", type=int, default=10, help="fewest pairs for an interval (default 10)")
    evaluate.add_argument("--bins", type=int, default=10, help="reliability bins over [0.5, 1] (default 10)")
    evaluate.set_defaults(handler=run_evaluate)

    audit = commands.add_parser("audit", help="flag probably wrong and ambiguous labels with an ensemble")
    audit.add_argument("--labels", required=True, help="labelled pairs (JSONL)")
    audit.add_argument("members", nargs="+", help="NAME=FILE.jsonl per ensemble member (at least 2)")
    audit.add_argument("--z", type=float, default=1.0, help="confidence: |mean| > z * std (default 1)")
    audit.add_argument("--t", type=float, default=0.0, help="probably wrong when mean < -t (default 0)")
    audit.add_argument("--flagged-only", action="store_true", help="list only flagged pairs (counts stay whole)")
    audit.set_defaults(handler=run_audit)

    raters = commands.add_parser("raters", help="Dawid-Skene rater reliability and gold-item scores")
    raters.add_argument("--labels", required=True, help="labels (JSONL): comparison_id, annotator, choice a/b/tie")
    raters.add_argument("--gold", default=None, help="gold answers (JSONL): comparison_id, answer a/b")
    raters.add_argument("--max-iter", type=int, default=200, help="EM iterations at most (default 200)")
    raters.add_argument("--items", action="store_true", help="also print each item's posterior")
    raters.set_defaults(handler=run_raters)

    overopt = commands.add_parser("overopt", help="proxy vs gold reward against sqrt(KL) per checkpoint (Gao et al. 2022)")
    overopt.add_argument("--samples", required=True, help="scored samples (JSONL): checkpoint, step, proxy, components, gold, kl")
    overopt.add_argument("--rule", action="append", help="a component that is a rule check (repeatable)")
    overopt.add_argument("--top", type=int, default=20, help="largest proxy - gold gap samples listed (default 20)")
    overopt.set_defaults(handler=run_overopt)

    score = commands.add_parser("overopt-score", help="generate, KL and proxy/gold scores per checkpoint (the "
                                                      "rows overopt reads)")
    score.add_argument("--spec", required=True, help="OveroptScoreSpec (YAML/JSON): prompts, output, start_policy, "
                                                     "checkpoints, reward, gold, sampling")
    score.set_defaults(handler=run_overopt_score)
