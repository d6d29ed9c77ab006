"""Reads for rounds: the round list, win rates against the reference, and the over-optimisation chart."""

from __future__ import annotations

from collections import defaultdict

from django.db.models import QuerySet

from rlcore.training.calibration import wilson_interval
from webapp.rounds.models import OveroptimizationReport, Round

UNTAGGED = "(untagged)"


def round_list(*, project) -> QuerySet[Round]:
    return Round.objects.filter(project=project).select_related("policy", "reference", "dataset")


def overopt_report_list(*, project) -> QuerySet[OveroptimizationReport]:
    return OveroptimizationReport.objects.filter(project=project).select_related("run", "round")


def _tally(outcomes: list[float]) -> dict:
    """Wins count 1, ties 1/2, losses 0; Wilson 95% interval on (wins + ties/2) of n."""
    wins, ties = outcomes.count(1.0), outcomes.count(0.5)
    n = len(outcomes)
    low, high = wilson_interval(wins + 0.5 * ties, n) if n else (None, None)
    return {"n": n, "wins": wins, "ties": ties, "losses": n - wins - ties,
            "win_rate": (wins + 0.5 * ties) / n if n else None, "low": low, "high": high}


def round_win_rates(*, round: Round) -> dict:
    """Human and LM win rates of the round's policy against its reference, overall and per prompt category.

    Each label of a pair comparison with one response of each policy counts once: a win when it prefers the
    policy's response, a tie as half a win (the tie count is shown). Adjudications are not raters and are
    left out; ranking labels are counted as dropped. A prompt with several LM tags counts under each.
    """
    from webapp.annotation.models import Comparison, ComparisonKind, LabelSource, PreferenceLabel
    from webapp.datasets.models import Response
    from webapp.routing.tagging import lm_tags_by_prompt

    owner = dict(Response.objects.filter(prompt__dataset__project=round.project,
                                         policy_id__in=[round.policy_id, round.reference_id])
                 .values_list("id", "policy_id"))
    prompt_ids = set(Response.objects.filter(pk__in=owner).values_list("prompt_id", flat=True))
    comparisons = {}
    for c in Comparison.objects.filter(project=round.project, prompt_id__in=prompt_ids, kind=ComparisonKind.PAIR):
        ids = list(c.response_ids)
        if len(ids) == 2 and {owner.get(ids[0]), owner.get(ids[1])} == {round.policy_id, round.reference_id}:
            comparisons[c.pk] = (c.prompt_id, 0 if owner[ids[0]] == round.policy_id else 1)
    tags = lm_tags_by_prompt({p for p, _ in comparisons.values()})
    outcomes: dict[str, dict[str, list[float]]] = {"human": defaultdict(list), "lm": defaultdict(list)}
    dropped = defaultdict(int)
    labels = PreferenceLabel.objects.filter(comparison_id__in=comparisons).values_list("comparison_id", "source", "choice")
    for comparison_id, source, choice in labels:
        if source == LabelSource.ADJUDICATION:
            dropped["adjudications (not a rater)"] += 1
            continue
        if choice not in ("a", "b", "tie"):
            dropped[f"{choice} labels"] += 1
            continue
        prompt_id, policy_side = comparisons[comparison_id]
        value = 0.5 if choice == "tie" else float((choice == "a") == (policy_side == 0))
        key = "human" if source == LabelSource.HUMAN else "lm"
        outcomes[key]["__all__"].append(value)
        for tag in tags.get(prompt_id) or [UNTAGGED]:
            outcomes[key][tag].append(value)
    categories = sorted({t for o in outcomes.values() for t in o if t != "__all__"})
    return {
        "round": round.number, "policy": {"id": round.policy_id, "name": round.policy.name},
        "reference": {"id": round.reference_id, "name": round.reference.name},
        "n_comparisons": len(comparisons), "dropped": dict(dropped),
        "overall": {k: _tally(outcomes[k]["__all__"]) for k in ("human", "lm")},
        "categories": [{"category": t, **{k: _tally(outcomes[k][t]) for k in ("human", "lm")}} for t in categories],
        "tie_rule": "a tie counts as half a win; Wilson 95% interval on (wins + ties/2) of n labels",
    }


HUMAN_GOLD_MIN_LABELS = 10  # below this a Wilson interval on a win rate is wider than ±0.25: no figure shown


def overopt_human_gold(*, report: OveroptimizationReport, samples_gold: dict | None = None) -> dict:
    """Gold = human win rate, on read: per scored checkpoint, people's labels (source human; adjudications and
    LM labels left out and counted) on its head-to-head comparisons against the start policy, a win when the
    checkpoint's response is preferred, a tie as half (tie count shown), Wilson 95% interval on (wins + ties/2)
    of n. Fewer than ``HUMAN_GOLD_MIN_LABELS`` labels: no figure, and how many more are needed. ``samples_gold``
    (a dict, filled when given): per checkpoint, {checkpoint Response id: its comparison's mean label outcome}."""
    from django.conf import settings

    from webapp.annotation.models import Comparison, LabelSource, PreferenceLabel
    from webapp.datasets.models import Response

    gold = report.human_gold or {}
    if not gold.get("checkpoints"):
        return {}
    with_samples = samples_gold is not None
    minimum = int(getattr(settings, "OVEROPT_HUMAN_GOLD_MIN_LABELS", HUMAN_GOLD_MIN_LABELS))
    all_ids = [i for c in gold["checkpoints"].values() for i in c["comparison_ids"]]
    pairs = dict(Comparison.objects.filter(pk__in=all_ids).values_list("pk", "response_ids"))
    owner = dict(Response.objects.filter(pk__in={r for ids in pairs.values() for r in ids})
                 .values_list("pk", "policy_id"))
    labels = defaultdict(list)
    for comparison_id, source, choice in PreferenceLabel.objects.filter(comparison_id__in=all_ids).values_list(
            "comparison_id", "source", "choice"):
        labels[comparison_id].append((source, choice))
    out = {}
    for label, c in gold["checkpoints"].items():
        outcomes, dropped, per_response = [], defaultdict(int), {}
        for comparison_id in c["comparison_ids"]:
            ids = pairs.get(comparison_id, [])
            side = 0 if ids and owner.get(ids[0]) == c["policy_id"] else 1
            mine = []
            for source, choice in labels[comparison_id]:
                if source != LabelSource.HUMAN:
                    dropped[f"{source} labels (not people's)"] += 1
                elif choice not in ("a", "b", "tie"):
                    dropped[f"{choice} labels"] += 1
                else:
                    mine.append(0.5 if choice == "tie" else float((choice == "a") == (side == 0)))
            outcomes.extend(mine)
            if mine and len(ids) == 2:  # several raters on one comparison: their mean outcome
                per_response[ids[side]] = sum(mine) / len(mine)
        if with_samples:
            samples_gold[label] = per_response
        tally = _tally(outcomes)
        needed = max(0, minimum - tally["n"])
        if needed:
            tally.update(win_rate=None, low=None, high=None)
        out[label] = {**tally, "needed": needed, "min_labels": minimum, "comparisons": len(c["comparison_ids"]),
                      "dropped": dict(dropped)}
    return out


HEAD_TO_HEAD_LOST = 0.5  # a head-to-head outcome below this lost against the start: the judge disagrees


def overopt_report_view(*, report: OveroptimizationReport) -> tuple[dict, dict]:
    """(the report dict to show, the human gold per checkpoint). For gold = human win rate the stored rlcore report
    has no gold at all (the scoring job scored none), so on read it is recomputed from the stored samples with
    people's labels: per checkpoint the win rate and its Wilson interval (only where enough labels are in) as
    rlcore's per-checkpoint gold, which drives the peak flag; per sample the label of its comparison (lost 0, tie
    0.5, won 1) for the gap samples and the rule-disagreement symptom (threshold: lost). Other gold kinds: as stored."""
    from rlcore.analysis.overoptimization import (CheckpointGold, OveroptSettings, SampleScore,
                                                  analyse_overoptimization)
    from webapp.datasets.models import Response

    per_response: dict = {}
    human = overopt_human_gold(report=report, samples_gold=per_response)
    if not human or not report.samples:
        return report.report, human
    # a sample row's checkpoint Response: same prompt, same sample index (the scoring job wrote them so)
    labelled = {r for rs in per_response.values() for r in rs}
    by_key = {(m.get("checkpoint"), p, i): pk for pk, p, i, m in Response.objects.filter(pk__in=labelled)
              .values_list("pk", "prompt_id", "sample_index", "metadata")}
    rows = []
    for row in report.samples:
        index = str(row.get("response_id", "")).rsplit("/", 1)[-1]
        key = (row["checkpoint"], int(row["prompt_id"]) if str(row["prompt_id"]).isdigit() else None,
               int(index) if index.isdigit() else None)
        label = per_response.get(row["checkpoint"], {}).get(by_key.get(key))
        rows.append(SampleScore.model_validate({**row, "gold": label}))
    scored = {r.checkpoint for r in rows}
    gold = {label: CheckpointGold(value=g["win_rate"], low=g["low"], high=g["high"], n=g["n"],
                                  interval="Wilson 95% on (wins + ties/2) of n people's labels")
            for label, g in human.items() if g["win_rate"] is not None and label in scored}
    recomputed = analyse_overoptimization(rows, OveroptSettings(**report.report.get("settings", {})),
                                          checkpoint_gold=gold, gold_threshold=HEAD_TO_HEAD_LOST)
    return recomputed.model_dump(), human


CHART_W, CHART_H, PAD = 560, 280, 48


def overopt_chart(*, report: dict, human_gold: dict | None = None) -> dict:
    """Server-drawn chart of proxy (left axis) and gold (right axis) against sqrt(KL): each on its own
    axis because they are on different scales; the flagged peak gets a vertical line. Coordinates only,
    the template draws the SVG (no script, so the strict CSP holds)."""
    points = report["checkpoints"]
    xs = [p["sqrt_kl"] for p in points]
    x_low, x_high = min(xs), max(xs)

    def x_of(v):
        return PAD + (CHART_W - 2 * PAD) * ((v - x_low) / (x_high - x_low) if x_high > x_low else 0.5)

    def series(values):
        known = [v for v in values if v is not None]
        low, high = (min(known), max(known)) if known else (0.0, 1.0)

        def y_of(v):
            return CHART_H - PAD - (CHART_H - 2 * PAD) * ((v - low) / (high - low) if high > low else 0.5)
        pts = [{"x": round(x_of(x), 1), "y": round(y_of(v), 1), "value": v, "sqrt_kl": x, "checkpoint": p["checkpoint"]}
               for x, v, p in zip(xs, values, points) if v is not None]
        return {"points": pts, "path": " ".join(f"{q['x']},{q['y']}" for q in pts), "low": low, "high": high}

    peak = report["peak"]
    peak_x = next((x_of(p["sqrt_kl"]) for p in points if p["checkpoint"] == peak["checkpoint"]), None)
    return {"width": CHART_W, "height": CHART_H, "pad": PAD, "x_low": x_low, "x_high": x_high,
            "proxy": series([p["proxy"]["mean"] for p in points]),
            "gold": series([(human_gold.get(p["checkpoint"]) or {}).get("win_rate") for p in points] if human_gold
                           else [p["gold"]["mean"] if p["gold"] else None for p in points]),
            "peak_x": round(peak_x, 1) if peak_x is not None and peak["flagged"] else None,
            "bottom": CHART_H - PAD, "right": CHART_W - PAD}


def overopt_preview_row(*, project, ref: str) -> dict | None:
    """``overopt:<report id>:<index>`` as a rubric-preview row (prompt, completion, the sample's ids), or None
    when it names no gap sample of this project's reports."""
    kind, _, rest = ref.partition(":")
    report_id, _, index = rest.partition(":")
    if kind != "overopt" or not report_id.isdigit() or not index.isdigit():
        return None
    report = OveroptimizationReport.objects.filter(project=project, pk=int(report_id)).first()
    # the same gap list the page numbered: recomputed on read for human gold
    gaps = overopt_report_view(report=report)[0].get("gap_samples", []) if report else []
    if int(index) >= len(gaps):
        return None
    g = gaps[int(index)]
    return {"id": f"flagged {g['checkpoint']} {g['prompt_id']}", "prompt": g.get("prompt") or g["prompt_id"],
            "completion": g["completion"], "checkpoint": g["checkpoint"]}


def run_loop_links(*, job) -> dict:
    """What a GRPO run is part of: the reward spec version it trained against, the policies it produced, the
    rounds those policies answer (or are the reference of), and its over-optimisation reports. Empty for
    other jobs."""
    from webapp.rubrics.models import RewardSpecVersion
    from webapp.jobs.kinds import GRPO_KIND

    if job.kind != GRPO_KIND:
        return {"is_run": False}
    spec = job.spec or {}
    version = (RewardSpecVersion.objects.filter(pk=spec.get("reward_spec_version_id"), spec__project=job.project)
               .select_related("spec").first())
    policies = list(job.policies.filter(deleted_at__isnull=True).order_by("step", "pk"))
    rounds = list(Round.objects.filter(project=job.project, policy__in=policies)
                  | Round.objects.filter(project=job.project, reference__in=policies))
    return {"is_run": True, "spec_version": version, "policies": policies,
            "rounds": sorted(set(rounds), key=lambda r: r.number),
            "reports": list(OveroptimizationReport.objects.filter(run=job).only("pk", "name")[:20])}
