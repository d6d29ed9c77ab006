"""Reads for reward analysis: the reward sources a project can compare, the response set and human labels
of a dataset in rlcore's shapes, stored comparisons and their drill-downs."""

from __future__ import annotations

from typing import Any

from django.db.models import Count, QuerySet

from webapp.analysis.models import SourceComparison

# Rubrics and rule-only specs are scored during the request; above this many responses the page refuses
# (a scoring job for them is not built yet) rather than hold a web worker for minutes.
SYNC_RESPONSE_LIMIT = 5000


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
