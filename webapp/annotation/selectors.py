"""Reads for annotation: the item an annotator sees, queue progress, agreement, export rows."""

from __future__ import annotations

from collections import namedtuple
from collections.abc import Iterator

from django.db.models import Count, Q, QuerySet, Sum

from rlcore.agreement import LabelRecord, agreement_report, ranking_pair_records, signed_strength
from rlcore.datasets import ExportLabel, ExportResponse
from webapp.annotation.models import Assignment, AssignmentStatus, Choice, Comparison, LabelSource, PreferenceLabel
from webapp.datasets.models import Response

EXPORT_CHUNK = 1000


def item_for(assignment: Assignment) -> dict:
    """What the annotator is shown: the prompt and the responses in *their* order (A, B, ...)."""
    comparison = assignment.comparison
    prompt = comparison.prompt
    by_id = Response.objects.only("id", "text", "messages", "prompt_id").in_bulk(assignment.display_order)
    shown = [by_id[rid] for rid in assignment.display_order if rid in by_id]
    return {
        "assignment_id": assignment.pk,
        "comparison_id": comparison.pk,
        "kind": comparison.kind,
        "expires_at": assignment.expires_at,
        "prompt": {"text": prompt.text, "messages": prompt.messages},
        "responses": [{"letter": chr(65 + i), "response_id": r.pk, "text": r.text, "messages": r.messages}
                      for i, r in enumerate(shown)],
    }


def comparison_list(*, project, dataset_id: int | None = None) -> QuerySet[Comparison]:
    qs = Comparison.objects.filter(project=project)
    if dataset_id is not None:
        qs = qs.filter(prompt__dataset_id=dataset_id)
    return qs.order_by("id")


def queue_progress(*, project, user=None) -> dict:
    totals = Comparison.objects.filter(project=project, is_active=True).aggregate(
        comparisons=Count("id"), slots=Sum("overlap"), labelled=Sum("human_label_count"))
    out = {"comparisons": totals["comparisons"] or 0, "slots": totals["slots"] or 0,
           "labelled": totals["labelled"] or 0}
    if user is not None:
        out["mine"] = PreferenceLabel.objects.filter(comparison__project=project, annotator=user,
                                                     source=LabelSource.HUMAN).count()
    return out


def rater_id(label: PreferenceLabel, usernames: dict[int, str]) -> tuple[str, str]:
    if label.source == LabelSource.LM:
        return f"lm:{label.model_version or 'judge'}", "lm"
    if label.annotator_id is None:
        imported = (label.provenance or {}).get("imported", {}).get("annotator") or f"label-{label.pk}"
        return f"imported:{imported}", "human"
    return usernames.get(label.annotator_id, str(label.annotator_id)), "human"


_RATED_FIELDS = ("pk", "comparison_id", "source", "annotator_id", "choice", "ranking", "strength", "model_version",
                 "provenance")
# What agreement reads of a label (rater_id's fields included), without building a model instance per label.
_RatedLabel = namedtuple("_RatedLabel", _RATED_FIELDS)


def agreement_for(*, project, level: str = "nominal") -> dict:
    """Agreement over the project's labels: overall, by pair kind, per annotator.

    Pairwise labels: nominal statistics use the canonical choice (A / B / tie); the ordinal alpha
    uses the signed strength (-2 A much better ... +2 B much better). N-way rankings get a report of
    their own over the pairwise judgements each ranking implies (rlcore.agreement.ranking_pair_records).
    """
    from django.contrib.auth import get_user_model

    usernames = dict(get_user_model().objects.filter(memberships__project=project).values_list("id", "username"))
    labels = PreferenceLabel.objects.filter(comparison__project=project).order_by("id").values_list(*_RATED_FIELDS)
    counts = {"pairwise": 0, "rankings": 0}

    # Records are made as rlcore reads them, a database chunk at a time, one pass per report: two lists of
    # every label as records held 1.4 KB per label (143 MB of web-worker memory for 100k labels).
    def pairwise(ordinal: bool) -> Iterator[LabelRecord]:
        for row in labels.exclude(choice=Choice.RANKING).iterator(chunk_size=EXPORT_CHUNK):
            label = _RatedLabel(*row)
            rid, kind = rater_id(label, usernames)
            value = {"a": "A", "b": "B", "tie": "tie"}[label.choice]
            counts["pairwise"] += not ordinal
            yield LabelRecord(comparison_id=str(label.comparison_id), rater_id=rid, rater_kind=kind,
                              value=signed_strength(value, label.strength or 1) if ordinal else value)

    def ranking_pairs() -> Iterator[LabelRecord]:
        for row in labels.filter(choice=Choice.RANKING).iterator(chunk_size=EXPORT_CHUNK):
            label = _RatedLabel(*row)
            counts["rankings"] += 1
            rid, kind = rater_id(label, usernames)
            yield from ranking_pair_records(str(label.comparison_id), rid, kind, label.ranking or [])

    report = agreement_report(pairwise(ordinal=False), level="nominal")
    ordinal_report = agreement_report(pairwise(ordinal=True), level="ordinal", order=[-2, -1, 0, 1, 2])
    rankings = agreement_report(ranking_pairs(), level="nominal")
    return {"report": report, "ordinal_alpha": ordinal_report.overall.krippendorff_alpha,
            "ordinal_by_pair_kind": {k: v.krippendorff_alpha for k, v in ordinal_report.by_pair_kind.items()},
            "n_labels": counts["pairwise"], "rankings": rankings, "n_rankings": counts["rankings"]}


def export_preview(*, project) -> dict[str, int]:
    """How many labels an export starts from, by kind and source: what the tie policy acts on."""
    counts = dict(PreferenceLabel.objects.filter(comparison__project=project).values_list("choice")
                  .annotate(n=Count("id")).order_by())
    by_source = dict(PreferenceLabel.objects.filter(comparison__project=project).values_list("source")
                     .annotate(n=Count("id")).order_by())
    return {"labels": sum(counts.values()), "decisive": counts.get(Choice.A, 0) + counts.get(Choice.B, 0),
            "ties": counts.get(Choice.TIE, 0), "rankings": counts.get(Choice.RANKING, 0),
            "human": by_source.get(LabelSource.HUMAN, 0), "lm": by_source.get(LabelSource.LM, 0)}


def export_labels(*, project, source: str | None = None, dataset_id: int | None = None,
                  chunk_size: int = EXPORT_CHUNK) -> Iterator[ExportLabel]:
    """Every label of the project as rlcore ExportLabels, ordered by (comparison, label), read a range of
    whole comparisons (about ``chunk_size`` labels) at a time."""
    comparisons = Comparison.objects.filter(project=project)
    if dataset_id:
        comparisons = comparisons.filter(prompt__dataset_id=dataset_id)
    labels = PreferenceLabel.objects.all()
    if source:
        labels = labels.filter(source=source)
    last = 0
    while True:
        # A chunk is a range of comparison ids, ending with the comparison that holds the chunk_size-th
        # next label, and the range is put on both tables, so every query is an index range scan. A keyset
        # OR over (comparison_id, id) with a join to the comparisons was a filter, not an index condition:
        # each chunk re-read every label and comparison before it (quadratic: 100k labels took 23 s).
        window = labels.filter(comparison_id__gt=last)
        bound = list(window.filter(comparison__in=comparisons.filter(id__gt=last).values("id"))
                     .order_by("comparison_id").values_list("comparison_id", flat=True)[chunk_size - 1:chunk_size])
        in_range = comparisons.filter(id__gt=last, **({"id__lte": bound[0]} if bound else {}))
        chunk = list(window.filter(comparison__in=in_range.values("id"), **(
            {"comparison_id__lte": bound[0]} if bound else {})).select_related("annotator").order_by("comparison_id", "id"))
        if not chunk:
            return
        by_id = Comparison.objects.select_related("prompt").in_bulk({lab.comparison_id for lab in chunk})
        response_ids = {rid for c in by_id.values() for rid in c.response_ids}
        responses = Response.objects.only("id", "text", "messages").in_bulk(response_ids)
        for lab in chunk:
            comparison = by_id[lab.comparison_id]
            ids = comparison.response_ids
            position = {rid: i for i, rid in enumerate(ids)}
            prompt = comparison.prompt
            yield ExportLabel(
                label_id=str(lab.pk), comparison_id=str(lab.comparison_id), prompt_text=prompt.text,
                prompt_messages=prompt.messages,
                responses=[ExportResponse(text=responses[r].text, messages=responses[r].messages) for r in ids],
                choice=lab.choice, ranking=[position[r] for r in lab.ranking if r in position] if lab.ranking else None,
                strength=lab.strength, source=lab.source,
                annotator=lab.annotator.username if lab.annotator else
                (lab.provenance or {}).get("imported", {}).get("annotator", ""),
                annotator_id=lab.annotator_id, model_version=lab.model_version,
                display_order=[position[r] for r in lab.display_order if r in position],
                labeled_at=lab.created_at.isoformat(), rationale=lab.rationale,
                criterion_scores=_scores_by_position(lab.criterion_scores, position),
                provenance={k: v for k, v in (lab.provenance or {}).items() if k != "imported"},
            )
        last = chunk[-1].comparison_id


def _scores_by_position(scores: dict, position: dict[int, int]) -> dict:
    out = {}
    for rid, per in (scores or {}).items():
        try:
            out[str(position[int(rid)])] = per
        except (KeyError, ValueError):
            out[str(rid)] = per
    return out


def annotator_stats(*, project) -> list[dict]:
    """Labels, skips and median seconds per annotator (for the agreement page)."""
    rows = (Assignment.objects.filter(project=project)
            .values("annotator__username")
            .annotate(labelled=Count("id", filter=Q(status=AssignmentStatus.DONE)),
                      skipped=Count("id", filter=Q(status=AssignmentStatus.SKIPPED)),
                      expired=Count("id", filter=Q(status=AssignmentStatus.EXPIRED)))
            .order_by("annotator__username"))
    return list(rows)
