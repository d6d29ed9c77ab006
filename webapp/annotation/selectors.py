"""Reads for annotation: the item an annotator sees, queue progress, agreement, export rows."""

from __future__ import annotations

from collections import namedtuple
from collections.abc import Iterator

from django.db.models import Count, F, Q, QuerySet, Sum

from rlcore.agreement import AgreementAccumulator, LabelRecord, ranking_pair_records, signed_strength
from rlcore.datasets import ExportLabel, ExportResponse
from webapp.annotation.models import Assignment, AssignmentStatus, Choice, Comparison, LabelSource, PreferenceLabel
from webapp.datasets.models import Response
from webapp.readers import readers

EXPORT_CHUNK = 1000


def labels_scored_with(*, rubric_versions) -> int:
    """How many labels were made with any of ``rubric_versions`` (their criteria scored, or an LM judge's rubric)."""
    return PreferenceLabel.objects.filter(rubric_version__in=rubric_versions).count()


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


def step_queue_progress(*, project, user=None) -> dict:
    """queue_progress for step items: slots and labels of step items; `mine` counts the user's step labels."""
    from webapp.annotation.models import ComparisonKind, StepLabel, StepLabelSource

    totals = Comparison.objects.filter(project=project, is_active=True, kind=ComparisonKind.STEPS).aggregate(
        comparisons=Count("id"), slots=Sum("overlap"), labelled=Sum("human_label_count"))
    out = {k: v or 0 for k, v in totals.items()}
    if user is not None:
        out["mine"] = StepLabel.objects.filter(comparison__project=project, annotator=user).exclude(
            source=StepLabelSource.LM).count()
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
    # An adjudication resolves a disagreement; it is not one more rater's opinion (it would agree by design).
    labels = (PreferenceLabel.objects.filter(comparison__project=project).exclude(source=LabelSource.ADJUDICATION)
              .order_by("comparison_id", "id").values_list(*_RATED_FIELDS))
    counts = {"pairwise": 0, "rankings": 0}
    report_acc = AgreementAccumulator(level="nominal")
    ordinal_acc = AgreementAccumulator(level="ordinal", order=[-2, -1, 0, 1, 2])
    rankings_acc = AgreementAccumulator(level="nominal")
    open_rankings: list[LabelRecord] = []  # the current comparison's ranking pairs, units interleaved by rater

    def close_rankings() -> None:
        # Each response pair of a ranked comparison is its own unit: hand them over unit by unit (a stable
        # sort keeps the raters' order within a unit).
        for rec in sorted(open_rankings, key=lambda r: r.comparison_id):
            rankings_acc.add(rec)
        open_rankings.clear()

    # ONE query, ordered by comparison, read a chunk at a time: one snapshot for all three reports (separate
    # passes could disagree when a label lands mid-request), and each comparison is added to the statistics
    # and forgotten, so memory stays flat (an index of every label grew the worker by 363 MB at 1M labels).
    current = None
    for row in labels.iterator(chunk_size=EXPORT_CHUNK):
        label = _RatedLabel(*row)
        if label.comparison_id != current:
            close_rankings()
            current = label.comparison_id
        rid, kind = rater_id(label, usernames)
        if label.choice == Choice.RANKING:
            counts["rankings"] += 1
            open_rankings.extend(ranking_pair_records(str(label.comparison_id), rid, kind, label.ranking or []))
            continue
        counts["pairwise"] += 1
        value = {"a": "A", "b": "B", "tie": "tie"}[label.choice]
        report_acc.add(LabelRecord(comparison_id=str(label.comparison_id), rater_id=rid, rater_kind=kind, value=value))
        ordinal_acc.add(LabelRecord(comparison_id=str(label.comparison_id), rater_id=rid, rater_kind=kind,
                                    value=signed_strength(value, label.strength or 1)))
    close_rankings()
    report, ordinal_report, rankings = report_acc.report(), ordinal_acc.report(), rankings_acc.report()
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
            adjudicated = lab.source == LabelSource.ADJUDICATION
            yield ExportLabel(
                label_id=str(lab.pk), comparison_id=str(lab.comparison_id), prompt_text=prompt.text,
                prompt_messages=prompt.messages,
                responses=[ExportResponse(text=responses[r].text, messages=responses[r].messages) for r in ids],
                choice=lab.choice, ranking=[position[r] for r in lab.ranking if r in position] if lab.ranking else None,
                # an adjudication is a person's label, marked as the resolution in its provenance
                strength=lab.strength, source=LabelSource.HUMAN if adjudicated else lab.source,
                annotator=lab.annotator.username if lab.annotator else
                (lab.provenance or {}).get("imported", {}).get("annotator", ""),
                annotator_id=lab.annotator_id, model_version=lab.model_version,
                display_order=[position[r] for r in lab.display_order if r in position],
                labeled_at=lab.created_at.isoformat(), rationale=lab.rationale,
                criterion_scores=_scores_by_position(lab.criterion_scores, position),
                provenance={**{k: v for k, v in (lab.provenance or {}).items() if k != "imported"},
                            **({"adjudication": True} if adjudicated else {})},
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


# ------------------------------------------------------------------ label quality: gold, raters, audit


def _rater_labels(*, project, sources=(LabelSource.HUMAN, LabelSource.LM)):
    """The project's pairwise labels as rlcore RaterLabels (adjudications are not a rater)."""
    from django.contrib.auth import get_user_model

    from rlcore.analysis.raters import RaterLabel

    usernames = dict(get_user_model().objects.filter(memberships__project=project).values_list("id", "username"))
    rows = (PreferenceLabel.objects.filter(comparison__project=project, source__in=sources,
                                           choice__in=(Choice.A, Choice.B, Choice.TIE))
            .order_by("id").values_list(*_RATED_FIELDS))
    for row in rows.iterator(chunk_size=EXPORT_CHUNK):
        label = _RatedLabel(*row)
        yield RaterLabel(item_id=str(label.comparison_id), rater=rater_id(label, usernames)[0], label=label.choice)


def gold_scores(*, project):
    """Each annotator's accuracy on the gold items they labelled (rlcore.analysis.raters.score_gold):
    count, correct, ties given, Wilson interval; annotators with no gold label are listed apart."""
    from rlcore.analysis.raters import score_gold

    gold = {str(pk): answer for pk, answer in Comparison.objects.filter(project=project).exclude(gold_answer="")
            .values_list("pk", "gold_answer")}
    return score_gold(list(_rater_labels(project=project, sources=(LabelSource.HUMAN,))), gold)


def rater_reliability(*, project):
    """A Dawid-Skene fit over the project's pairwise labels (humans and LM judges, no gold needed).
    Raises rlcore UserError when there is too little to fit (no label, or one class only)."""
    from rlcore.analysis.raters import fit_dawid_skene

    return fit_dawid_skene(list(_rater_labels(project=project)))


def disagreements(*, project, limit: int = 200) -> list[dict]:
    """Pair comparisons whose human / LM labels disagree (or were sent to adjudication), each with every label
    side by side (choice, strength, annotator, rationale) and the resolution if one is recorded."""
    from django.db.models import Max, Min

    ids = list(PreferenceLabel.objects.filter(comparison__project=project, comparison__kind="pair",
                                              source__in=(LabelSource.HUMAN, LabelSource.LM))
               .values("comparison_id").annotate(lo=Min("choice"), hi=Max("choice"), n=Count("id"))
               .filter(n__gte=2).exclude(lo=F("hi")).order_by("comparison_id").values_list("comparison_id", flat=True)
               [:limit])
    comparisons = Comparison.objects.select_related("prompt").in_bulk(ids)
    responses = Response.objects.only("id", "text").in_bulk({r for c in comparisons.values() for r in c.response_ids})
    out: dict[int, dict] = {}
    for cid in ids:
        c = comparisons[cid]
        out[cid] = {"comparison_id": cid, "prompt": c.prompt.text, "overlap": c.overlap, "taken": c.taken,
                    "responses": [{"letter": chr(97 + i), "response_id": r, "text": responses[r].text}
                                  for i, r in enumerate(c.response_ids) if r in responses],
                    "labels": [], "resolution": None}
    for lab in (PreferenceLabel.objects.filter(comparison_id__in=ids).select_related("annotator")
                .order_by("comparison_id", "id")):
        entry = {"label_id": lab.pk, "source": lab.source, "choice": lab.choice, "strength": lab.strength,
                 "annotator": lab.annotator.username if lab.annotator else f"lm:{lab.model_version or 'judge'}",
                 "rationale": lab.rationale}
        if lab.source == LabelSource.ADJUDICATION:
            out[lab.comparison_id]["resolution"] = entry
        else:
            out[lab.comparison_id]["labels"].append(entry)
    return list(out.values())


def _missing(field: str, message: str):
    """What the audit is missing (no such ensemble, one member, scores not computed): 422 naming the field."""
    from django.core.exceptions import ValidationError

    return ValidationError({field: message})


def ensembles(*, project) -> list[dict]:
    """The project's registered ensembles, newest job first, each with its member names, for the audit page's
    picker (the registry is training's: webapp.readers)."""
    return readers.ensembles(project=project)


def ensemble_audit(*, project, job_id: int, z: float = 1.0, t: float = 0.0):
    """The ensemble audit ("Secrets of RLHF ... Part II", rlcore.analysis.audit) of the project's decisive
    human and LM pair labels, from the members' stored response scores (the reward-scores worker job,
    webapp.routing.reward_scores). Returns (EnsembleAudit, {pair label id: comparison id})."""
    from rlcore.analysis.audit import audit_from_scores
    from rlcore.analysis.inputs import LabelledPair, ScoreTable

    members = readers.ensemble_members(project=project, job_id=job_id)
    if not members:
        raise _missing("ensemble_job_id", f"Job {job_id} registered no ensemble members in this project.")
    if len(members) < 2:
        raise _missing("ensemble_job_id", f"Job {job_id} is an ensemble of one ({members[0].name}): one "
                                                 "model's spread is unknown, so no label can be called wrong.")
    labels = list(PreferenceLabel.objects.filter(comparison__project=project, comparison__kind="pair",
                                                 source__in=(LabelSource.HUMAN, LabelSource.LM))
                  .values_list("pk", "comparison_id", "choice", "comparison__prompt_id", "comparison__response_ids"))
    if not labels:
        raise _missing("labels", "This project has no pair labels to audit.")
    response_ids = {r for *_, ids in labels for r in ids}
    tables, missing = [], []
    for m in members:
        rows = readers.response_scores(reward_model=m, response_ids=response_ids)
        if len({r for _, r, _ in rows}) < len(response_ids):
            missing.append(f"{m.name} ({len(response_ids) - len(rows)} of {len(response_ids)} responses)")
        tables.append(ScoreTable.from_rows(m.name, rows))
    if missing:
        raise _missing("ensemble_job_id", "Scores are missing for " + "; ".join(missing)
                              + ": run 'Score responses with reward models' (routing) first.")
    pairs = []
    for pk, cid, choice, prompt_id, ids in labels:
        chosen, rejected = (ids[0], ids[1]) if choice != Choice.B else (ids[1], ids[0])
        pairs.append(LabelledPair(prompt_id=str(prompt_id), chosen_id=str(chosen), rejected_id=str(rejected),
                                  tie=choice == Choice.TIE, label_id=str(pk), comparison_id=str(cid)))
    return audit_from_scores(tables, pairs, z=z, t=t), {str(pk): cid for pk, cid, *_ in labels}


def audit_preview(audit, comparison_of: dict[str, int], flags=("probably_wrong", "ambiguous")) -> dict:
    """What "send flagged to adjudication" would touch: labels and comparisons, before it runs."""
    flagged = [p for p in audit.pairs if p.flag in flags]
    comparisons = sorted({comparison_of[p.pair_id] for p in flagged})
    return {"flags": list(flags), "labels": len(flagged), "comparisons": len(comparisons),
            "comparison_ids": comparisons}


# ------------------------------------------------------------------ step labels (issue 13)


def step_agreement(*, project) -> dict:
    """Agreement over step labels, with the counts each figure rests on.

    - per step: Krippendorff's alpha (ordinal: bad < neutral < good, or 1-5) and percent agreement over
      units (step item, step index) graded by two or more people (human and reviewed labels);
    - first wrong step: the exact-match rate over pairs of people who labelled the same item (both saying
      "no wrong step" is a match), with the pair and item counts;
    - human-LM: per step, how often a person's grade equals the LM pre-label's (latest LM label of the
      item), overall, by step position and per judge model, with Cohen's kappa over the aligned grades.
    LM labels never enter the human figures; a reviewed label saw the suggestion, so human-LM is also
    given for unprompted (human-only) labels.
    """
    from itertools import combinations

    from rlcore.agreement import cohen_kappa, krippendorff_alpha, percent_agreement
    from webapp.annotation.models import StepLabel, StepLabelSource

    rows = list(StepLabel.objects.filter(comparison__project=project).order_by("id")
                .values_list("comparison_id", "source", "grades", "first_error", "model_version"))
    people: dict[int, list] = {}
    lm: dict[int, tuple] = {}
    for comparison_id, source, grades, first_error, model_version in rows:
        if source == StepLabelSource.LM:
            lm[comparison_id] = (grades, model_version)  # the latest pre-label of the item
        else:
            people.setdefault(comparison_id, []).append((source, grades, first_error))
    units = {(cid, i): [g[1][i] for g in labels if i < len(g[1])]
             for cid, labels in people.items() if len(labels) >= 2 for i in range(len(labels[0][1]))}
    pairs = [(a[2], b[2]) for labels in people.values() for a, b in combinations(labels, 2)]
    matches = sum(a == b for a, b in pairs)

    def versus_lm(sources) -> dict:
        lm_grades, human_grades, by_position, by_model = [], [], {}, {}
        for cid, labels in people.items():
            if cid not in lm:
                continue
            grades, model = lm[cid]
            for source, human, _ in labels:
                if source not in sources:
                    continue
                for i, (x, y) in enumerate(zip(grades, human)):
                    lm_grades.append(x)
                    human_grades.append(y)
                    for key, table in ((i, by_position), (model, by_model)):
                        n, agree = table.get(key, (0, 0))
                        table[key] = (n + 1, agree + (x == y))
        n = len(lm_grades)
        return {"n_steps": n, "agreement": sum(x == y for x, y in zip(lm_grades, human_grades)) / n if n else None,
                "cohen_kappa": cohen_kappa(lm_grades, human_grades) if n else None,
                "by_position": [{"step": i, "n_steps": c, "agreement": a / c} for i, (c, a) in sorted(by_position.items())],
                "by_model": [{"model_version": m, "n_steps": c, "agreement": a / c} for m, (c, a) in sorted(by_model.items())]}

    return {
        "n_labels": sum(len(v) for v in people.values()), "n_lm_labels": len(lm),
        "steps": {"n_items": sum(len(v) >= 2 for v in people.values()), "n_units": len(units),
                  "alpha_ordinal": krippendorff_alpha(units, level="ordinal") if units else None,
                  "percent_agreement": percent_agreement(units) if units else None},
        "first_error": {"n_pairs": len(pairs), "n_items": sum(len(v) >= 2 for v in people.values()),
                        "exact_match": matches / len(pairs) if pairs else None},
        "human_lm": versus_lm({StepLabelSource.HUMAN, StepLabelSource.REVIEWED}),
        "human_lm_unprompted": versus_lm({StepLabelSource.HUMAN}),
    }
