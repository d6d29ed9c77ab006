"""Labels that arrive in an imported file: the datasets app writes the prompts and responses and sends its import
signals (webapp.datasets.services); the comparisons and labels built on them are written, and deleted, here."""

from __future__ import annotations

from django.core.exceptions import ValidationError

from webapp.annotation.models import (
    Assignment, Comparison, ComparisonKind, PreferenceLabel, StepLabel, StepLabelSource, StepScale,
)


def preference_labels_import(sender, *, dataset, rows, members, **kwargs) -> int:
    """One comparison per labelled row (a pair, or a ranking of its responses) with its labels; a rater named in
    the file is the project member of that username, once per comparison."""
    comparisons = Comparison.objects.bulk_create([
        Comparison(project_id=dataset.project_id, prompt_id=prompt.pk,
                   kind=ComparisonKind.PAIR if len(ids) == 2 else ComparisonKind.RANKING, response_ids=ids,
                   overlap=max(1, sum(lab.source == "human" for lab in row.labels)),
                   taken=sum(lab.source == "human" for lab in row.labels),
                   human_label_count=sum(lab.source == "human" for lab in row.labels))
        for prompt, row, ids in rows])
    labels = []
    for comparison, (_, row, ids) in zip(comparisons, rows):
        used_annotators = set()
        for lab in row.labels:
            annotator_id = members.get(lab.annotator) if lab.source == "human" else None
            if annotator_id in used_annotators:
                annotator_id = None
            used_annotators.add(annotator_id)
            provenance = dict(lab.provenance)
            provenance["imported"] = {"dataset_id": dataset.pk, "line": row.line, "label_id": lab.label_id,
                                      "annotator": lab.annotator, "labeled_at": lab.labeled_at}

            def pick(pos):
                return ids[pos] if 0 <= pos < len(ids) else None

            labels.append(PreferenceLabel(
                comparison_id=comparison.pk, source=lab.source, annotator_id=annotator_id, choice=lab.choice,
                ranking=[pick(p) for p in lab.ranking] if lab.ranking else None, strength=lab.strength,
                criterion_scores=lab.criterion_scores, rationale=lab.rationale,
                display_order=[pick(p) for p in lab.display_order], model_version=lab.model_version[:200],
                provenance=provenance))
    PreferenceLabel.objects.bulk_create(labels)
    return len(labels)


def step_labels_import(sender, *, dataset, rows, members, **kwargs) -> int:
    """One step item per labelled stepwise row, on the row's split, with its label (the exported grades, first
    wrong step, kind, rater and note when the file carries them, else good 1 / bad -1 from the booleans)."""
    for line_no, row, prompt, response, split in rows:
        meta = dict(row.metadata)
        scale = meta.get("scale") if meta.get("scale") in StepScale.values else StepScale.TERNARY
        grades = meta.get("step_grades") or [1 if good else -1 for good in row.labels]
        if not isinstance(grades, list) or len(grades) != len(row.steps):
            raise ValidationError({"file": f"row {line_no}, field 'step_grades': {len(grades)} grades for "
                                           f"{len(row.steps)} steps"})
        source = meta.get("source") if meta.get("source") in StepLabelSource.values else StepLabelSource.HUMAN
        annotator_id = members.get(meta.get("rater")) if source != StepLabelSource.LM else None
        human = source != StepLabelSource.LM
        comparison = Comparison.objects.create(project_id=dataset.project_id, prompt=prompt,
                                               kind=ComparisonKind.STEPS, response_ids=[response.pk], overlap=1,
                                               taken=int(human), human_label_count=int(human), step_split=split,
                                               step_scale=scale)
        StepLabel.objects.create(
            comparison=comparison, step_split=split, source=source, annotator_id=annotator_id, scale=scale,
            grades=grades, first_error=meta.get("first_error", row.first_error), note=meta.get("note") or "",
            model_version=meta.get("rater") if source == StepLabelSource.LM else "",
            provenance={"imported": {"dataset_id": dataset.pk, "line": line_no, "rater": meta.get("rater"),
                                     "label_id": meta.get("label_id")}})
    return len(rows)


def imported_rows_purge(sender, *, dataset_id: int, **kwargs) -> None:
    """Delete what was built on a dataset's rows before they go (raw deletes, children first)."""
    for qs in (StepLabel.objects.filter(comparison__prompt__dataset_id=dataset_id),
               PreferenceLabel.objects.filter(comparison__prompt__dataset_id=dataset_id),
               Assignment.objects.filter(comparison__prompt__dataset_id=dataset_id),
               Comparison.objects.filter(prompt__dataset_id=dataset_id)):
        qs._raw_delete(qs.db)
