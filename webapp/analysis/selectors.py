"""Reads for reward analysis: the reward sources a project can compare, the response set and human labels
of a dataset in rlcore's shapes, stored comparisons and their drill-downs."""

from __future__ import annotations

from typing import Any

import numpy as np
from django.core.exceptions import ValidationError
from django.db.models import Count, QuerySet

from webapp.analysis.models import SourceComparison



def inline_response_limit() -> int:
    """Rubrics and rule-only specs are scored during the request up to this many responses (setting
    ANALYSIS_INLINE_RESPONSES, default 5,000); above it a worker job scores them, so no web worker is held for
    minutes."""
    from django.conf import settings

    return settings.ANALYSIS_INLINE_RESPONSES


def comparison_progress(*, comparison: SourceComparison) -> list[dict[str, Any]]:
    """Per scoring job of a comparison: the source it scores, its state, progress and error."""
    return [{"job_id": j.pk, "source": (j.spec or {}).get("source_name", ""), "state": j.state,
             "progress_step": j.progress_step, "progress_total": j.progress_total, "error": j.error}
            for j in comparison.jobs.order_by("pk")]


def source_choices(*, project) -> list[dict[str, Any]]:
    """Every reward source of the project: ``{key, name, kind, note}``, keys as the API takes them."""
    from webapp.routing.models import ResponseRewardScore
    from webapp.rubrics.models import RewardSpecVersion, RubricVersion
    from webapp.training.selectors import reward_model_list

    out = []
    for v in RubricVersion.objects.filter(rubric__project=project).select_related("rubric").order_by("rubric__name", "-number"):
        out.append({"key": f"rubric:{v.pk}", "name": f"rubric {v.rubric.name} v{v.number}", "kind": "rubric",
                    "note": "rule criteria, scored here"})
    for v in RewardSpecVersion.objects.filter(spec__project=project).select_related("spec").order_by("spec__name", "-number"):
        out.append({"key": f"spec:{v.pk}", "name": f"spec {v.spec.name} v{v.number}", "kind": "spec",
                    "note": "rule components, scored here"})
    scored = dict(ResponseRewardScore.objects.filter(reward_model__project=project).values("reward_model_id")
                  .annotate(n=Count("id")).values_list("reward_model_id", "n"))
    for m in reward_model_list(project=project):
        member = f" member {m.member}" if m.member is not None else ""
        out.append({"key": f"rm:{m.pk}", "name": f"RM {m.name}{member} #{m.pk}", "kind": "reward_model",
                    "note": f"{scored.get(m.pk, 0)} responses scored (Routing: score with the registry)"})
    for g in judge_grade_sources(project=project):
        out.append({"key": g["key"], "name": g["name"], "kind": "judge_grades",
                    "note": f"{g['n_responses']} responses graded by the LM judge on the rubric's judged criteria"})
    return out


def judge_grade_sources(*, project) -> list[dict[str, Any]]:
    """LM judges' per-response rubric grades (``PreferenceLabel.criterion_scores`` of LM labels from a labelling
    run that asked for them): one source per (rubric version, judge model_version), key
    ``judge:<rubric version id>:<model_version>``, with how many responses carry a grade."""
    from webapp.annotation.models import LabelSource, PreferenceLabel
    from webapp.rubrics.models import RubricVersion

    graded: dict[tuple[int, str], set[str]] = {}
    for version_id, judge, scores in (PreferenceLabel.objects.filter(comparison__project=project, source=LabelSource.LM,
                                                                      rubric_version__isnull=False)
                                      .exclude(criterion_scores={})
                                      .values_list("rubric_version_id", "model_version", "criterion_scores")):
        graded.setdefault((version_id, judge or ""), set()).update((scores or {}).keys())
    versions = {v.pk: v for v in RubricVersion.objects.filter(pk__in={v for v, _ in graded}).select_related("rubric")}
    return [{"key": f"judge:{version_id}:{judge}", "n_responses": len(ids),
             "name": f"judge {judge or '(unnamed)'} grades on {versions[version_id]}"}
            for (version_id, judge), ids in sorted(graded.items())]


def judge_grade_scores(*, project, version_id: int, judge: str) -> dict[str, float]:
    """``{response id: score}`` from one judge's grades on one rubric version: each graded criterion normalised
    to its scale ((score - scale_min) / (scale_max - scale_min)), combined by the rubric's own aggregation
    (weights, vetoes; criteria the judge did not grade, such as rule criteria, left out). A response graded in
    several labels keeps its latest grades."""
    from rlcore.rubric import CompiledRubric
    from webapp.annotation.models import LabelSource, PreferenceLabel
    from webapp.rubrics.models import RubricVersion
    from webapp.rubrics.selectors import rubric_contract

    version = RubricVersion.objects.get(pk=version_id, rubric__project=project)
    compiled = CompiledRubric(rubric_contract(version=version))
    latest: dict[str, dict[str, float]] = {}
    for scores in (PreferenceLabel.objects.filter(comparison__project=project, source=LabelSource.LM,
                                                  rubric_version=version, model_version=judge)
                   .order_by("id").values_list("criterion_scores", flat=True)):
        latest.update(scores or {})
    out = {}
    for response_id, per in latest.items():
        normalised = [None if c.name not in per else (per[c.name] - c.scale_min) / (c.scale_max - c.scale_min)
                      for c in compiled.criteria]
        total, _ = compiled.aggregate(normalised)
        if total is not None:
            out[response_id] = total
    return out


def dataset_responses(*, dataset) -> list[dict[str, Any]]:
    """The dataset's responses as rows ``{prompt_id, response_id, prompt, completion, <metadata>}``."""
    from webapp.datasets.models import Response

    rows = []
    for r in (Response.objects.filter(prompt__dataset=dataset).select_related("prompt")
              .order_by("prompt__source_line", "prompt_id", "id")):
        row = {**(r.prompt.metadata or {}), **(r.metadata or {})}
        row.update(prompt_id=str(r.prompt_id), response_id=str(r.pk), prompt=r.prompt.text, completion=r.text)
        rows.append(row)
    return rows


def human_pairs(*, dataset) -> tuple[list, int]:
    """Human a/b/tie labels on the dataset's pair comparisons as rlcore ``LabelledPair``s, and how many
    ranking labels were skipped (a ranking is not one pair)."""
    from rlcore.analysis.inputs import LabelledPair
    from webapp.annotation.models import Choice, LabelSource, PreferenceLabel

    pairs, rankings = [], 0
    for label in (PreferenceLabel.objects.filter(comparison__prompt__dataset=dataset, source=LabelSource.HUMAN)
                  .select_related("comparison").order_by("id")):
        ids = label.comparison.response_ids
        if label.choice == Choice.RANKING or len(ids) != 2:
            rankings += 1
            continue
        first, second = (ids[1], ids[0]) if label.choice == Choice.B else (ids[0], ids[1])
        pairs.append(LabelledPair(prompt_id=str(label.comparison.prompt_id), chosen_id=str(first),
                                  rejected_id=str(second), tie=label.choice == Choice.TIE,
                                  annotator=str(label.annotator_id or ""), label_id=str(label.pk),
                                  comparison_id=str(label.comparison_id)))
    return pairs, rankings


def comparison_list(*, project) -> QuerySet[SourceComparison]:
    return SourceComparison.objects.filter(project=project).select_related("dataset").defer("scores")


def score_tables(*, comparison: SourceComparison) -> list:
    from rlcore.analysis.inputs import ScoreTable

    return [ScoreTable.from_rows(s["name"], comparison.scores[s["name"]]) for s in comparison.sources]


def comparison_drill(*, comparison: SourceComparison, a: int, b: int, top: int = 20):
    """rlcore's drill-down between the a-th and b-th sources (matrix order) of a stored comparison."""
    from django.core.exceptions import ValidationError

    from rlcore.analysis.starc import drill_down

    if comparison.result is None:
        raise ValidationError({"comparison": f"Comparison {comparison.pk} is {comparison.state}: there is nothing "
                                             "to drill into yet."})
    names = [s["name"] for s in comparison.sources]
    for field, index in (("a", a), ("b", b)):
        if not 0 <= index < len(names):
            raise ValidationError({field: f"No source {index}: this comparison has sources 0 to {len(names) - 1}."})
    if a == b:
        raise ValidationError({"b": "Pick two different sources to drill into."})
    return drill_down(score_tables(comparison=comparison), names[a], names[b], top=top)


def heatmap_cells(*, comparison: SourceComparison, cell: int = 56) -> dict[str, Any]:
    """Geometry for the server-drawn SVG heatmap: one rect per (i, j) with its distance and fill colour
    (white at 0, dark red at 2 — the STARC range), and the axis labels."""
    starc = comparison.result["starc"]
    names, distances = starc["sources"], starc["distances"]
    margin = 12 + 7 * max((len(n) for n in names), default=0)
    cells = []
    for i, row in enumerate(distances):
        for j, d in enumerate(row):
            shade = max(0.0, min(1.0, d / 2.0))
            r, g, bl = 255, int(255 - 200 * shade), int(255 - 215 * shade)
            cells.append({"i": i, "j": j, "distance": d, "x": margin + j * cell, "y": margin + i * cell,
                          "fill": f"rgb({r},{g},{bl})", "dark": shade > 0.6,
                          "a": names[i], "b": names[j]})
    labels = [{"name": n, "pos": margin + k * cell + cell // 2} for k, n in enumerate(names)]
    size = margin + cell * len(names) + 4
    return {"cells": cells, "labels": labels, "size": size, "cell": cell, "margin": margin}


# ---------------------------------------------------------------- reward-model evaluation


def training_label_ids(*, reward_model) -> tuple[set[str], str]:
    """Label ids of the snapshot rows the model trained on, replaying its split (rlcore's held_out_groups
    and split_held_out with the spec's split_by, eval_fraction and seed), and a note on how it was found."""
    from rlcore.training.snapshot import held_out_groups, read_preferences, read_records, split_held_out

    spec = reward_model.spec or {}
    path = spec.get("preference_snapshot") or reward_model.snapshot_path
    try:
        records = read_records(path)
        snapshot = read_preferences(path, bool(spec.get("use_margin", False)))
    except Exception as exc:  # a missing or unreadable snapshot: nothing can be excluded, so nothing is evaluated
        raise ValidationError({"reward_model": f"RM {reward_model.name}: its training snapshot {path} cannot be "
                                               f"read ({exc}); without it the labels it saw are unknown."}) from None
    if spec.get("eval_snapshot"):
        train_index = range(len(snapshot.rows))
        note = "trained on every row of its snapshot (held-out pairs came from a separate file)"
    else:
        groups, _ = held_out_groups(snapshot, spec.get("split_by", "comparison"))
        train, _ = split_held_out(snapshot.rows, float(spec.get("eval_fraction", 0.1)), int(spec.get("seed", 42)),
                                  groups=groups)
        kept = {id(r) for r in train}
        train_index = [i for i, r in enumerate(snapshot.rows) if id(r) in kept]
        note = (f"split by {spec.get('split_by', 'comparison')}, eval_fraction {spec.get('eval_fraction', 0.1)}, "
                f"seed {spec.get('seed', 42)}")
    return {str(records[i][1].get("label_id", "")) for i in train_index} - {""}, note


# Routing features are cut into this many quantile bins (tertiles, as routing itself bins them), fitted on the
# comparisons being evaluated; a value equal to a cut point goes to the lower bin (rlcore's rule).
ROUTING_FEATURE_BINS = 3


def _routing_feature_groups(labels) -> dict[int, dict[str, str]]:
    """Per label: the tertile of each numeric routing feature of its comparison (rlcore's extract_features on
    the texts, routing's tags, judge confidence and reward-model margins; no embeddings, so no cosine_sim),
    as ``{"routing: <feature> (tertiles)": "1 low (≤ 3)"}``."""
    from rlcore.routing.features import CONTINUOUS_FEATURES, bin_labels, extract_features, fit_bins
    from webapp.routing.services import _routing_comparisons

    comparisons = list({lb.comparison_id: lb.comparison for lb in labels}.values())
    if not comparisons:
        return {}
    raw = {r.comparison_id: r for r in extract_features(_routing_comparisons(comparisons))}
    bins = fit_bins(list(raw.values()), n_bins=ROUTING_FEATURE_BINS)
    names = bin_labels(ROUTING_FEATURE_BINS)
    out: dict[int, dict[str, str]] = {}
    for lb in labels:
        features = raw[str(lb.comparison_id)]
        groups = {}
        for name in CONTINUOUS_FEATURES:
            value, cuts = getattr(features, name), bins.edges.get(name)
            if value is None or cuts is None:
                continue
            k = int(np.searchsorted(np.asarray(cuts), value, side="left"))
            span = (f"≤ {cuts[0]:.3g}" if k == 0 else f"> {cuts[-1]:.3g}" if k == len(cuts)
                    else f"{cuts[k - 1]:.3g} to {cuts[k]:.3g}")
            groups[f"routing: {name} (tertiles)"] = f"{k + 1} {names[k]} ({span})"
        out[lb.pk] = groups
    return out


def _label_groups(labels) -> dict[int, dict[str, str]]:
    """Per label: annotator, prompt category (routing's LM PromptTag), response-length bucket and the tertile
    of each routing feature."""
    from rlcore.analysis.evaluation import length_bucket
    from webapp.datasets.models import Response
    from webapp.routing.models import PromptTag

    prompt_ids = {lb.comparison.prompt_id for lb in labels}
    tags = dict(PromptTag.objects.filter(prompt_id__in=prompt_ids).values_list("prompt_id", "tags"))
    response_ids = {rid for lb in labels for rid in lb.comparison.response_ids[:2]}
    lengths = {pk: len(text) for pk, text in Response.objects.filter(pk__in=response_ids).values_list("pk", "text")}
    routing = _routing_feature_groups(labels)
    out = {}
    for lb in labels:
        a, b = lb.comparison.response_ids[:2]
        category = ", ".join(tags.get(lb.comparison.prompt_id) or []) or "(untagged)"
        out[lb.pk] = {"annotator": lb.annotator.username if lb.annotator else "(deleted)", "category": category,
                      "length": length_bucket((lengths.get(a, 0) + lengths.get(b, 0)) / 2), **routing.get(lb.pk, {})}
    return out


def _human_pair_labels(*, project):
    from webapp.annotation.models import Choice, LabelSource, PreferenceLabel

    return [lb for lb in (PreferenceLabel.objects.filter(comparison__project=project, source=LabelSource.HUMAN)
                          .exclude(choice=Choice.RANKING).select_related("comparison__prompt", "annotator")
                          .order_by("id"))
            if len(lb.comparison.response_ids) == 2]


def reward_model_evaluation(*, project, reward_model_id: int, min_pairs: int = 10) -> dict[str, Any]:
    """rlcore's evaluation of one registered reward model on the project's human pair labels it never saw:
    labels in its training rows are excluded and counted; per annotator, prompt category, length bucket."""
    from django.shortcuts import get_object_or_404

    from rlcore.analysis.evaluation import EvaluatedPair, evaluate_pairs
    from rlcore.errors import UserError
    from webapp.routing.models import ResponseRewardScore
    from webapp.training.models import RewardModel

    model = get_object_or_404(RewardModel, project=project, pk=reward_model_id, deleted_at__isnull=True)
    name = f"RM {model.name} #{model.pk}"
    trained, split_note = training_label_ids(reward_model=model)
    labels = _human_pair_labels(project=project)
    held = [lb for lb in labels if str(lb.pk) not in trained]
    scores = dict(ResponseRewardScore.objects.filter(reward_model=model).values_list("response_id", "score"))
    groups = _label_groups(held)
    pairs, unscored = [], 0
    for lb in held:
        a, b = lb.comparison.response_ids[:2]
        if a not in scores or b not in scores:
            unscored += 1
            continue
        margin = scores[a] - scores[b] if lb.choice != "b" else scores[b] - scores[a]
        pairs.append(EvaluatedPair(margin=margin, tie=lb.choice == "tie", groups=groups[lb.pk]))
    try:
        result = evaluate_pairs(pairs, source=name, min_pairs=min_pairs, n_pairs_unscored=unscored)
    except UserError as exc:
        raise ValidationError({"reward_model": f"{exc}; {len(labels) - len(held)} of {len(labels)} human labels "
                                               f"were in its training rows and are excluded, {unscored} held-out "
                                               "pairs are not scored (Routing: score with the registry)."}) from None
    return {"evaluation": result.model_dump(mode="json"), "n_labels": len(labels),
            "n_excluded_training": len(labels) - len(held), "n_unscored": unscored, "split": split_note}


def judge_evaluation(*, project, min_pairs: int = 10) -> list[dict[str, Any]]:
    """Per LM judge (model_version): its a/b/tie labels against the human labels of the same comparisons,
    as rlcore evaluations (margin +1 agrees, -1 opposite, 0 the judge said tie); judges below min_pairs
    are listed with the reason instead of a figure."""
    from rlcore.analysis.evaluation import EvaluatedPair, evaluate_pairs
    from rlcore.errors import UserError
    from webapp.annotation.models import Choice, LabelSource, PreferenceLabel

    humans = _human_pair_labels(project=project)
    by_comparison: dict[int, list] = {}
    for lb in humans:
        by_comparison.setdefault(lb.comparison_id, []).append(lb)
    groups = _label_groups(humans)
    judged: dict[str, list] = {}
    for lm in (PreferenceLabel.objects.filter(comparison__project=project, source=LabelSource.LM,
                                              comparison_id__in=by_comparison)
               .exclude(choice=Choice.RANKING).order_by("id")):
        for human in by_comparison[lm.comparison_id]:
            agree = 0.0 if lm.choice == "tie" else (1.0 if lm.choice == human.choice else -1.0)
            judged.setdefault(lm.model_version or "(unnamed judge)", []).append(
                EvaluatedPair(margin=agree, tie=human.choice == "tie", groups=groups[human.pk]))
    out = []
    for version, pairs in sorted(judged.items()):
        try:
            out.append({"judge": version, "evaluation": evaluate_pairs(pairs, source=version, min_pairs=min_pairs)
                        .model_dump(mode="json"), "error": None})
        except UserError as exc:
            out.append({"judge": version, "evaluation": None, "error": str(exc)})
    return out


def reliability_diagram(*, evaluation: dict[str, Any], width: int = 320, height: int = 240) -> dict[str, Any]:
    """Geometry for the server-drawn SVG reliability diagram of a dumped ``RewardModelEvaluation``: x is the
    confidence max(p, 1 - p) over [0.5, 1], y the accuracy over [0, 1]; one bar per non-empty bin (its
    accuracy, its count written above), a dot at the bin's mean confidence, and the diagonal (perfect
    calibration, accuracy = confidence)."""
    left, top, plot_w, plot_h = 44, 16, width - 60, height - 52

    def x(conf: float) -> float:
        return round(left + (conf - 0.5) / 0.5 * plot_w, 2)

    def y(acc: float) -> float:
        return round(top + (1.0 - acc) * plot_h, 2)

    bars = []
    for b in evaluation.get("reliability") or []:
        x0, x1 = x(b["low"]), x(b["high"])
        bars.append({**b, "x": x0, "w": round(x1 - x0 - 1, 2), "y": y(b["accuracy"]),
                     "h": round(top + plot_h - y(b["accuracy"]), 2), "cx": x(b["mean_confidence"]),
                     "cy": y(b["accuracy"]), "label_x": round((x0 + x1) / 2, 2), "label_y": y(b["accuracy"]) - 4})
    ticks = [{"value": v, "x": x(v), "y": y(v)} for v in (0.5, 0.6, 0.7, 0.8, 0.9, 1.0)]
    return {"width": width, "height": height, "bars": bars, "ticks": ticks,
            "diagonal": {"x1": x(0.5), "y1": y(0.5), "x2": x(1.0), "y2": y(1.0)},
            "axis": {"left": left, "right": left + plot_w, "top": top, "bottom": top + plot_h},
            "n_pairs": sum(b["count"] for b in bars)}
