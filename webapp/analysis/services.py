"""Writes for reward analysis: score each chosen source on a dataset's responses, compare them with rlcore
(STARC distances, per-prompt rank correlation, agreement on human labels) and store the result with the
score tables it rests on."""

from __future__ import annotations

from typing import Any

from django.core.exceptions import ValidationError
from django.shortcuts import get_object_or_404

from webapp.analysis import selectors
from webapp.analysis.models import SourceComparison


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
        compiled = CompiledRubric(rubric_contract(version=version))
        if not compiled.rule_indices:
            raise ValidationError({"sources": f"{name} has no rule criterion: its criteria need an LM judge, "
                                              "which is not run here."})
        out = []
        for row in rows:
            value = compiled.score_rules(str(row["completion"]), row)
            if value is not None:
                out.append([row["prompt_id"], row["response_id"], value])
        return out
    if kind == "spec":
        from rlcore.rewards.engine import score_rows
        from rlcore.rewards.spec import RewardModelComponent, RubricJudgeComponent

        version = get_object_or_404(RewardSpecVersion, pk=ident, spec__project=project)
        contract = reward_spec_contract(version=version)
        slow = [c.name for c in contract.components if isinstance(c, (RewardModelComponent, RubricJudgeComponent))]
        if slow:
            raise ValidationError({"sources": f"{name} has components that need a model ({', '.join(slow)}); "
                                              "only rule-based specs are scored here: compare its reward models "
                                              "as sources of their own."})
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

    Refuses, naming the source: fewer than two sources, an unknown one, a source that did not score every
    response of the set (rlcore's align_sources message), a set too large to score during the request."""
    from rlcore.analysis.inputs import ScoreTable
    from rlcore.analysis.starc import compare_sources
    from rlcore.errors import UserError
    from webapp.datasets.models import Dataset, DatasetStatus

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
    if needs_scoring and len(rows) > selectors.SYNC_RESPONSE_LIMIT:
        raise ValidationError({"sources": f"{names[needs_scoring[0]]}: dataset {dataset.name!r} has {len(rows)} "
                                          f"responses, more than the {selectors.SYNC_RESPONSE_LIMIT} scored during "
                                          "a request; pick a smaller dataset."})
    scores = {names[k]: _scores_for(project=project, key=k, name=names[k], rows=rows) for k in keys}
    for name, table in scores.items():
        if not table:
            raise ValidationError({"sources": f"{name} has no score for any of the {len(rows)} responses of "
                                              f"dataset {dataset.name!r}."})
    pairs, _ = selectors.human_pairs(dataset=dataset)
    try:
        tables = [ScoreTable.from_rows(name, table) for name, table in scores.items()]
        result = compare_sources(tables, pairs or None)
    except UserError as exc:
        raise ValidationError({"sources": str(exc)}) from None
    return SourceComparison.objects.create(
        project=project, dataset=dataset, sources=[{"key": k, "name": names[k]} for k in keys], scores=scores,
        result=result.model_dump(mode="json"), n_labelled_pairs=len(pairs), created_by=user)
