"""LM labels from a labelling run's output: each line the judge wrote becomes a label, or the reason it is none.

:func:`lm_labels_record` turns the lines of ``labels.jsonl`` (:mod:`webapp.judging.runs`) into
PreferenceLabels (source ``lm``), or StepLabels of kind lm for a steps run, as they come: a comparison
without a verdict gets no label, only an LMLabelAttempt with the reason; when the job ends, every
comparison it did not reach gets one too. Then ``lm_labelling_finished`` tells the router which
comparisons have labels and which must go back to people.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import django.dispatch
from django.core.exceptions import ValidationError
from django.db import transaction

from rlcore.judges.outcomes import NO_LABEL, line_outcome
from webapp.annotation.models import Choice, Comparison
from webapp.annotation.services import lm_label_create, step_lm_label_create
from webapp.jobs.models import FINISHED_STATES, Job, JobState
from webapp.judging.models import AttemptStatus, JudgePromptTemplate, LabellingMode, LMLabelAttempt, LMLabellingRun, \
    PromptMode
from webapp.judging.runs import JUDGE_LABELS_KIND, LABELS_FILE, default_template

logger = logging.getLogger(__name__)

# Sent once per labelling run when every comparison in it has an outcome:
# labelled: [comparison id], failed: {comparison id: reason}.
lm_labelling_finished = django.dispatch.Signal()


def step_prelabel_record(*, project, comparison_id: int, grades: list, first_error: int | None, model_version: str,
                         template_id: int | None = None, provenance: dict | None = None):
    """An LM judge's grades of a step item's steps, sent by a script (not a run), as a StepLabel of kind lm: a
    pre-label annotators confirm or correct. ``template_id``: the project's step-grading template it used."""
    comparison = Comparison.objects.select_related("project", "step_split").filter(
        project=project, pk=comparison_id).first()
    if comparison is None:
        raise ValidationError({"comparison_id": f"No comparison {comparison_id} in this project."})
    template = None
    if template_id is not None:
        template = JudgePromptTemplate.objects.filter(project=project, pk=template_id).first()
        if template is None or template.mode != PromptMode.STEPS:
            raise ValidationError({"template_id": f"No step-grading template {template_id} in this project."})
    return step_lm_label_create(comparison=comparison, grades=grades, first_error=first_error,
                                model_version=model_version, provenance=provenance or {}, judge_template=template)


def _record_step_prelabel(row: dict, run: LMLabellingRun, comparison: Comparison, model_version: str):
    """A ``judge steps`` line as a StepLabel of kind lm; None (with the reason) when it cannot be one."""
    if row.get("grades") is None:
        return None, row.get("error") or "the judge graded no step"
    provenance = {**_provenance(row, run), "scale": row.get("scale"),
                  "steps": [{k: s.get(k) for k in ("score", "confidence", "error", "rendered_prompt", "raw_reply")}
                            for s in row.get("steps") or []]}
    try:
        label = step_lm_label_create(comparison=comparison, grades=row["grades"], first_error=row.get("first_error"),
                                     model_version=model_version, provenance=provenance, judge_template=run.template)
    except ValidationError as exc:  # e.g. the item's split no longer has that many steps
        return None, " ".join(exc.messages)
    return label, ""


_CHOICE = {"A": "a", "B": "b", "tie": "tie"}


def _order(result: dict) -> dict:
    return {k: result.get(k) for k in ("rendered_prompt", "raw_reply", "verdict", "strength", "confidence", "error")}


def _provenance(row: dict, run: LMLabellingRun) -> dict:
    return {
        "judge": row.get("judge"), "judge_config": run.judge_config.name if run.judge_config else None,
        "template": str(run.template) if run.template else default_template(run.mode),
        "job_id": run.job_id, "mode": run.mode, "confidence": row.get("confidence"),
        "position_bias": row.get("position_bias"),
    }


def _pair_label(row: dict, run: LMLabellingRun, comparison: Comparison) -> dict | None:
    verdict = row.get("verdict")
    if verdict not in _CHOICE:
        return None
    return {"choice": _CHOICE[verdict], "strength": min(int(row.get("strength") or 1), 2), "provenance": {
        **_provenance(row, run),
        "forward_verdict": row.get("forward_verdict"), "swapped_verdict": row.get("swapped_verdict"),
        "confidence_source": row.get("confidence_source"), "label_probabilities": row.get("label_probabilities"),
        "judge_strength": row.get("strength"),
        "orders": {"ab": _order(row.get("forward") or {}), "ba": _order(row.get("swapped") or {})},
    }}


def _ranking_label(row: dict, run: LMLabellingRun, comparison: Comparison) -> dict | None:
    """Indices best first -> response ids best first; a ranking that is not a permutation of the
    comparison's responses is no label."""
    ids = list(comparison.response_ids)

    def as_ids(order):
        if not isinstance(order, list) or sorted(order) != list(range(len(ids))):
            return None
        return [ids[i] for i in order]

    ranking = as_ids(row.get("verdict"))
    if ranking is None:
        return None
    return {"choice": Choice.RANKING, "ranking": ranking, "strength": 1, "provenance": {
        **_provenance(row, run),
        "forward_verdict": as_ids(row.get("forward_verdict")), "reversed_verdict": as_ids(row.get("reversed_verdict")),
        "orders": {"given": _order(row.get("forward") or {}), "reversed": _order(row.get("reversed") or {})},
    }}


_LABEL_FROM_ROW = {LabellingMode.PAIRWISE: _pair_label, LabellingMode.RANKING: _ranking_label}


def _with_criterion_scores(fields: dict, row: dict, run: LMLabellingRun, comparison: Comparison) -> dict:
    """Add the rubric grades of a run that asked for them: ``criterion_scores`` {response id: {criterion:
    score}} with the scores the judge gave (a criterion it could not grade has none), every grade with its
    prompt, reply and error in ``provenance["criteria"]``."""
    graded = row.get("criterion_scores")
    if run.rubric_version_id is None or not isinstance(graded, list):
        return fields
    scores: dict[str, dict[str, float]] = {}
    grades: dict[str, dict] = {}
    for rid, per_criterion in zip(comparison.response_ids, graded):
        for name, grade in (per_criterion or {}).items():
            grades.setdefault(str(rid), {})[name] = grade
            if isinstance(grade, dict) and isinstance(grade.get("score"), (int, float)):
                scores.setdefault(str(rid), {})[name] = float(grade["score"])
    return {**fields, "criterion_scores": scores, "rubric_version": run.rubric_version,
            "provenance": {**fields["provenance"], "rubric": str(run.rubric_version), "criteria": grades}}


def _read_complete_lines(path: Path, offset: int) -> tuple[list[dict], int]:
    """The JSON lines written after byte `offset`, and the offset after the last complete one (a
    line still being written is left for the next read)."""
    try:
        with path.open("rb") as handle:
            handle.seek(offset)
            data = handle.read()
    except FileNotFoundError:
        return [], offset
    end = data.rfind(b"\n") + 1
    rows = []
    for line in data[:end].splitlines():
        try:
            rows.append(json.loads(line))
        except ValueError:
            continue
    return rows, offset + end


def lm_labels_record(*, job: Job) -> LMLabellingRun | None:
    """Record what the job's judge has written so far (idempotent: each comparison once per run).

    When the job has finished, comparisons with no line get an attempt with the job's error, and
    ``lm_labelling_finished`` is sent (once). A ranking run's comparisons without a label go back to
    the annotation queue as soon as their failure is recorded.
    """
    finished_now = None
    with transaction.atomic():
        run = (LMLabellingRun.objects.select_for_update(of=("self",))
               .select_related("judge_config", "template", "project", "rubric_version__rubric")
               .filter(job=job).first())
        if run is None or run.finished:
            return run
        job.refresh_from_db(fields=["state", "error", "output_dir"])
        done = set(LMLabelAttempt.objects.filter(run=run).values_list("comparison_id", flat=True))
        wanted = set(run.comparison_ids)
        comparisons = Comparison.objects.select_related("project").in_bulk(wanted)
        model_version = f"{run.judge_config.model if run.judge_config else job.spec.get('model', '')}"
        rows, run.bytes_read = _read_complete_lines(Path(job.output_dir) / LABELS_FILE, run.bytes_read)
        failed_now = []
        for row in rows:
            try:
                cid = int(row.get("request_id"))
            except (TypeError, ValueError):
                continue
            if cid in done or cid not in wanted or cid not in comparisons:
                continue
            done.add(cid)
            outcome = line_outcome(row, run.mode)
            if run.mode == LabellingMode.STEPS:
                step_label, reason = _record_step_prelabel(row, run, comparisons[cid], model_version[:200])
                LMLabelAttempt.objects.create(
                    run=run, comparison_id=cid, step_label=step_label, reason=reason[:4000],
                    status=AttemptStatus.LABELLED if step_label else AttemptStatus.FAILED,
                    outcome=outcome if step_label or outcome in NO_LABEL else "unparseable")
                run.n_labelled += step_label is not None
                run.n_failed += step_label is None
                continue
            fields = None if row.get("error") else _LABEL_FROM_ROW[run.mode](row, run, comparisons[cid])
            if fields is not None:
                fields = _with_criterion_scores(fields, row, run, comparisons[cid])
                label = lm_label_create(comparison=comparisons[cid], model_version=model_version[:200], **fields)
                LMLabelAttempt.objects.create(run=run, comparison_id=cid, status=AttemptStatus.LABELLED, label=label,
                                              outcome=outcome)
                run.n_labelled += 1
            else:
                reason = row.get("error") or ("no verdict" if row.get("verdict") is None else
                                              f"the judge's verdict {row.get('verdict')!r} does not fit the comparison")
                LMLabelAttempt.objects.create(run=run, comparison_id=cid, status=AttemptStatus.FAILED,
                                              reason=str(reason)[:4000],
                                              outcome=outcome if outcome in NO_LABEL else "unparseable")
                run.n_failed += 1
                failed_now.append(cid)
        if job.state in FINISHED_STATES:
            why = {JobState.SUCCEEDED: "the judge wrote no result for it",
                   JobState.CANCELLED: "the labelling job was cancelled before reaching it"}.get(
                job.state, f"the labelling job failed before reaching it: {(job.error or '').strip()[-500:]}")
            for cid in sorted(wanted - done):
                if cid in comparisons:
                    LMLabelAttempt.objects.create(run=run, comparison_id=cid, status=AttemptStatus.FAILED, reason=why,
                                                  outcome="not_judged")
                    run.n_failed += 1
                    failed_now.append(cid)
            run.finished = True
            finished_now = run
        if run.mode == LabellingMode.RANKING and failed_now:
            # Back to people at once (lm_rankings_label took them out of the queue); a routing plan's
            # pairs go back through lm_labelling_finished, which also updates the plan.
            Comparison.objects.filter(pk__in=failed_now).update(is_active=True)
        run.save(update_fields=["n_labelled", "n_failed", "finished", "bytes_read"])
    # A steps run's items never left the queue, so there is nothing for the router to send back.
    if finished_now is not None and finished_now.mode != LabellingMode.STEPS:
        attempts = LMLabelAttempt.objects.filter(run=finished_now)
        lm_labelling_finished.send(
            sender=LMLabellingRun, run=finished_now,
            labelled=[a.comparison_id for a in attempts if a.status == AttemptStatus.LABELLED],
            failed={a.comparison_id: a.reason for a in attempts if a.status == AttemptStatus.FAILED})
    return run


def on_job_succeeded(sender, job: Job, **kwargs) -> None:
    if job.kind != JUDGE_LABELS_KIND:
        return
    try:
        lm_labels_record(job=job)
    except Exception:  # the job itself succeeded; the page's reconcile records it on the next look
        logger.exception("could not record the LM labels of job %s", job.pk)


def lm_runs_reconcile(*, project) -> int:
    """Record labels of the project's unfinished runs: those still running (labels so far) and those
    whose job failed or was cancelled (no signal for those). Pages and the API call it on load."""
    n = 0
    for run in LMLabellingRun.objects.select_related("job").filter(project=project, finished=False):
        if run.job.state != JobState.QUEUED:
            lm_labels_record(job=run.job)
            n += 1
    return n


def lm_runs_reconcile_all() -> int:
    """Every project's unfinished runs (the beat task `judging.record_lm_labels`)."""
    n = 0
    for job in Job.objects.filter(lm_labelling__finished=False).exclude(state=JobState.QUEUED):
        try:
            lm_labels_record(job=job)
            n += 1
        except Exception:  # one broken run must not stop the others
            logger.exception("could not record the LM labels of job %s", job.pk)
    return n


