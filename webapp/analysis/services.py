"""Writes for reward analysis: score each chosen source on a dataset's responses, compare them with rlcore
(STARC distances, per-prompt rank correlation, agreement on human labels) and store the result with the
score tables it rests on."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from django.core.exceptions import ValidationError
from django.db import transaction
from django.shortcuts import get_object_or_404

from webapp.analysis import selectors
from webapp.analysis.models import ComparisonState, SourceComparison

SCORE_SOURCES_KIND = "score_sources"


def _scores_for(*, project, key: str, name: str, rows: list[dict[str, Any]]) -> list[list]:
    """``[[prompt_id, response_id, score], ...]`` of one source on ``rows``; responses it gives no score
    are left out (align_sources then names the source and how many it lacks)."""
    from webapp.routing.models import ResponseRewardScore
    from webapp.rubrics.models import RewardSpecVersion, RubricVersion
    from webapp.rubrics.selectors import reward_spec_contract, rubric_contract

    kind, _, ident = key.partition(":")
    if kind == "rubric":
        from rlcore.rubric import CompiledRubric

        version = get_object_or_404(RubricVersion, pk=ident, rubric__project=project)
        compiled = CompiledRubric(rubric_contract(version=version))  # _source_spec refused one without rules
        out = []
        for row in rows:
            value = compiled.score_rules(str(row["completion"]), row)
            if value is not None:
                out.append([row["prompt_id"], row["response_id"], value])
        return out
    if kind == "spec":
        from rlcore.rewards.engine import score_rows

        # Only rule-based specs reach here: _source_spec refused judge components, and a reward model goes to a job.
        version = get_object_or_404(RewardSpecVersion, pk=ident, spec__project=project)
        contract = reward_spec_contract(version=version)
        plain = [{k: v for k, v in r.items() if k not in ("prompt_id", "response_id")} for r in rows]
        scored = score_rows(contract, plain)
        return [[rows[s.index]["prompt_id"], rows[s.index]["response_id"], s.total]
                for s in scored if s.total is not None]
    if kind == "rm":
        wanted = {int(r["response_id"]): r["prompt_id"] for r in rows}
        return [[wanted[rid], str(rid), score] for rid, score in
                ResponseRewardScore.objects.filter(reward_model_id=int(ident), reward_model__project=project,
                                                   response_id__in=wanted).values_list("response_id", "score")]
    if kind == "judge":
        version_id, _, judge = ident.partition(":")
        graded = selectors.judge_grade_scores(project=project, version_id=int(version_id), judge=judge)
        return [[r["prompt_id"], r["response_id"], graded[r["response_id"]]] for r in rows if r["response_id"] in graded]
    raise ValidationError({"sources": f"Unknown source {key!r}: use rubric:<version id>, spec:<version id>, "
                                      "rm:<reward model id> or judge:<rubric version id>:<judge>."})


def source_comparison_create(*, project, user, dataset_id: int, source_keys: list[str]) -> SourceComparison:
    """Compare ``source_keys`` on the responses of one dataset and store the result.

    Rubrics and specs are scored during the request up to ``selectors.inline_response_limit()`` responses;
    above it, or when a spec needs a reward model, the comparison is stored pending and worker jobs score them.
    Refuses, naming the source: fewer than two sources, an unknown one, a rubric without rules or a spec with an
    LM-judge component, a source that did not score every response of the set (rlcore's align_sources message)."""
    from webapp.datasets.models import Dataset, DatasetStatus
    from webapp.jobs.models import Queue

    dataset = Dataset.objects.filter(project=project, pk=dataset_id, status=DatasetStatus.READY).first()
    if dataset is None:
        raise ValidationError({"dataset_id": f"No imported dataset {dataset_id} in this project."})
    keys = list(dict.fromkeys(source_keys))
    if len(keys) < 2:
        raise ValidationError({"sources": "Pick at least two reward sources to compare."})
    names = {c["key"]: c["name"] for c in selectors.source_choices(project=project)}
    unknown = [k for k in keys if k not in names]
    if unknown:
        raise ValidationError({"sources": f"Unknown source {unknown[0]!r}: use rubric:<version id>, spec:<version "
                                          "id>, rm:<reward model id> or judge:<rubric version id>:<judge> of this "
                                          "project."})
    rows = selectors.dataset_responses(dataset=dataset)
    if not rows:
        raise ValidationError({"dataset_id": f"Dataset {dataset.name!r} has no responses to score."})
    needs_scoring = [k for k in keys if k.startswith(("rubric:", "spec:"))]
    job_specs = {k: _source_spec(project=project, key=k, name=names[k]) for k in needs_scoring}
    pairs, _ = selectors.human_pairs(dataset=dataset)
    sources = [{"key": k, "name": names[k]} for k in keys]
    if needs_scoring and (len(rows) > selectors.inline_response_limit()
                          or any(queue == Queue.GPU for _, queue in job_specs.values())):
        return _comparison_with_jobs(project=project, user=user, dataset=dataset, sources=sources, rows=rows,
                                     job_specs={names[k]: v for k, v in job_specs.items()}, n_pairs=len(pairs))
    scores = {names[k]: _scores_for(project=project, key=k, name=names[k], rows=rows) for k in keys}
    return SourceComparison.objects.create(
        project=project, dataset=dataset, sources=sources, scores=scores,
        result=_compare(scores=scores, sources=sources, pairs=pairs, n_responses=len(rows),
                        dataset_name=dataset.name),
        n_labelled_pairs=len(pairs), created_by=user)


def _compare(*, scores: dict[str, list], sources: list[dict], pairs: list, n_responses: int,
             dataset_name: str) -> dict:
    """rlcore's RewardComparison of the score tables (matrix in ``sources`` order), dumped; a source with no
    score at all, or rlcore's refusal (e.g. a source missing responses), becomes a ValidationError on sources."""
    from rlcore.analysis.inputs import ScoreTable
    from rlcore.analysis.starc import compare_sources
    from rlcore.errors import UserError

    for source in sources:
        if not scores.get(source["name"]):
            raise ValidationError({"sources": f"{source['name']} has no score for any of the {n_responses} "
                                              f"responses of dataset {dataset_name!r}."})
    try:
        tables = [ScoreTable.from_rows(s["name"], scores[s["name"]]) for s in sources]
        return compare_sources(tables, pairs or None).model_dump(mode="json")
    except UserError as exc:
        raise ValidationError({"sources": str(exc)}) from None


def _source_spec(*, project, key: str, name: str) -> tuple[dict, str]:
    """The RewardSpec (as JSON) a worker job scores a rubric or spec source with, and the job's queue: gpu
    when a reward-model component must score, else default. A rubric becomes one ``rubric_rules`` component
    (weight 1, no normalisation: its total is the rubric's rule score, as ``score_rules`` gives inline)."""
    from rlcore.rewards.spec import RewardModelComponent, RubricJudgeComponent
    from rlcore.rubric import CompiledRubric
    from webapp.jobs.models import Queue
    from webapp.rubrics.models import RewardSpecVersion, RubricVersion
    from webapp.rubrics.selectors import reward_spec_contract, rubric_contract

    kind, _, ident = key.partition(":")
    if kind == "rubric":
        version = get_object_or_404(RubricVersion, pk=ident, rubric__project=project)
        contract = rubric_contract(version=version)
        if not CompiledRubric(contract).rule_indices:
            raise ValidationError({"sources": f"{name} has no rule criterion: its criteria need an LM judge, "
                                              "which is not run here."})
        return {"name": "analysis-rubric", "normalization": "none", "components": [
            {"kind": "rubric_rules", "name": "rubric", "weight": 1.0, "rubric": contract.model_dump(mode="json")}]}, \
            Queue.DEFAULT
    version = get_object_or_404(RewardSpecVersion, pk=ident, spec__project=project)
    contract = reward_spec_contract(version=version)
    judged = [c.name for c in contract.components if isinstance(c, RubricJudgeComponent)]
    if judged:
        raise ValidationError({"sources": f"{name} has rubric-judge components ({', '.join(judged)}) that need an "
                                          "LM judge, which is not run here: compare the judge's grades "
                                          "(judge:...) as a source of their own."})
    needs_model = any(isinstance(c, RewardModelComponent) for c in contract.components)
    return contract.model_dump(mode="json"), Queue.GPU if needs_model else Queue.DEFAULT


def _comparison_with_jobs(*, project, user, dataset, sources: list[dict], rows: list[dict],
                          job_specs: dict[str, tuple[dict, str]], n_pairs: int) -> SourceComparison:
    """A pending comparison: sources with stored scores (reward models, judge grades) are read now; each rubric
    or spec source gets a job scoring the frozen rows (``python -m rlcore reward score``, as Routing scores its
    reward models); record_source_scores computes the comparison when the last one succeeds."""
    from webapp.jobs.services import job_create
    from webapp.routing.reward_scores import write_scoring_files

    keys = [[r["prompt_id"], r["response_id"]] for r in rows]
    plain = [{k: v for k, v in r.items() if k not in ("prompt_id", "response_id")} for r in rows]
    with transaction.atomic():
        stored = {s["name"]: _scores_for(project=project, key=s["key"], name=s["name"], rows=rows)
                  for s in sources if s["name"] not in job_specs}
        for name, table in stored.items():  # refused now, not after the jobs ran
            if not table:
                raise ValidationError({"sources": f"{name} has no score for any of the {len(rows)} responses of "
                                                  f"dataset {dataset.name!r}."})
        comparison = SourceComparison.objects.create(
            project=project, dataset=dataset, sources=sources, scores=stored, state=ComparisonState.PENDING,
            n_labelled_pairs=n_pairs, created_by=user)
        for name, (spec, queue) in job_specs.items():
            job = job_create(project=project, user=user, kind=SCORE_SOURCES_KIND, argv=[], queue=queue,
                             title=f"score {name} on {len(rows)} responses of {dataset.name} (comparison "
                                   f"{comparison.pk})",
                             spec={"comparison_id": comparison.pk, "source_name": name, "rows": keys})
            job.argv = write_scoring_files(Path(job.output_dir), spec=spec, rows=plain)
            job.save(update_fields=["argv"])
            comparison.jobs.add(job)
    return comparison


def record_source_scores(sender, job, **kwargs) -> None:
    """On success of a scoring job (inside the transaction that marks it succeeded): store its source's scores
    and, once every source has them, compute and store the comparison. The comparison row is locked first, so
    two jobs finishing together are recorded one after the other and exactly one of them computes it."""
    if job.kind != SCORE_SOURCES_KIND:
        return
    from webapp.routing.reward_scores import read_scored_rows

    comparison = SourceComparison.objects.select_for_update().filter(pk=job.spec["comparison_id"]).first()
    if comparison is None or comparison.state != ComparisonState.PENDING:
        return
    keys = job.spec["rows"]
    comparison.scores[job.spec["source_name"]] = [
        [*keys[scored["index"]], scored["total"]] for scored in read_scored_rows(Path(job.output_dir))
        if scored["total"] is not None]
    if all(s["name"] in comparison.scores for s in comparison.sources):
        pairs, _ = selectors.human_pairs(dataset=comparison.dataset)
        try:
            comparison.result = _compare(scores=comparison.scores, sources=comparison.sources, pairs=pairs,
                                         n_responses=len(keys), dataset_name=comparison.dataset.name)
        except ValidationError as exc:  # the job did its part; the comparison itself cannot be made
            comparison.state, comparison.error = ComparisonState.FAILED, "; ".join(exc.messages)
        else:
            comparison.state, comparison.n_labelled_pairs = ComparisonState.READY, len(pairs)
    comparison.save(update_fields=["scores", "result", "state", "error", "n_labelled_pairs"])


def record_source_job_failure(sender, job, **kwargs) -> None:
    """A scoring job that failed or was cancelled fails its comparison, naming the source and the reason."""
    from webapp.jobs.models import JobState

    if job.kind != SCORE_SOURCES_KIND or job.state not in (JobState.FAILED, JobState.CANCELLED):
        return
    SourceComparison.objects.filter(pk=job.spec["comparison_id"], state=ComparisonState.PENDING).update(
        state=ComparisonState.FAILED,
        error=f"{job.spec['source_name']}: its scoring job {job.pk} {job.state}: {job.error or 'no reason given'}")
