"""REST API for reward analysis: the sources a project can compare, comparisons (STARC matrix, rank
correlation, label agreement, each with its counts) and drill-downs."""

from datetime import datetime
from typing import Any

from django.shortcuts import get_object_or_404
from ninja import Router, Schema, Status
from pydantic import Field

from webapp.analysis import selectors, services
from webapp.analysis.models import ComparisonState, SourceComparison
from webapp.projects.permissions import Capability, project_for_user

router = Router(tags=["analysis"])


class SourceOut(Schema):
    key: str = Field(description="What POST .../analysis/comparisons takes: rubric:<id>, spec:<id>, rm:<id>, "
                                 "judge:<rubric version id>:<judge model_version> (an LM judge's rubric grades).")
    name: str
    kind: str
    note: str


class ComparisonIn(Schema):
    dataset_id: int = Field(description="The response set: a dataset of the project.")
    sources: list[str] = Field(description="Two or more source keys from GET .../analysis/sources.")


class ComparisonOut(Schema):
    id: int
    dataset_id: int
    sources: list[dict[str, str]]
    n_labelled_pairs: int = Field(description="Human a/b/tie labels on the dataset given for agreement.")
    state: str = Field(description="ready; pending while worker jobs score rubric/spec sources; failed (see error).")
    error: str = Field(description="Why it failed: the source, its scoring job and that job's error.")
    jobs: list[dict[str, Any]] = Field(description="Scoring jobs: job_id, source, state, progress, error.")
    result: dict[str, Any] | None = Field(
        description="rlcore RewardComparison: starc, rank_correlations, label_agreement; null unless ready.")
    created_at: datetime


def _out(c: SourceComparison) -> dict:
    return {"id": c.pk, "dataset_id": c.dataset_id, "sources": c.sources, "n_labelled_pairs": c.n_labelled_pairs,
            "state": c.state, "error": c.error, "jobs": selectors.comparison_progress(comparison=c),
            "result": c.result, "created_at": c.created_at}


@router.get("/{project_id}/analysis/sources", response=list[SourceOut], summary="Reward sources that can be compared")
def list_sources(request, project_id: int):
    project, _ = project_for_user(request.auth, project_id, Capability.VIEW_DASHBOARDS)
    return selectors.source_choices(project=project)


@router.post("/{project_id}/analysis/comparisons", response={201: ComparisonOut, 202: ComparisonOut},
             summary="Compare reward sources on a dataset's responses (STARC distances, rank correlation, agreement); "
                     "202 and state pending when worker jobs score its rubric/spec sources (poll GET .../{id})")
def create_comparison(request, project_id: int, body: ComparisonIn):
    project, _ = project_for_user(request.auth, project_id, Capability.VIEW_DASHBOARDS)
    comparison = services.source_comparison_create(project=project, user=request.auth, dataset_id=body.dataset_id,
                                                   source_keys=body.sources)
    return Status(202 if comparison.state == ComparisonState.PENDING else 201, _out(comparison))


@router.get("/{project_id}/analysis/comparisons", response=list[ComparisonOut], summary="Stored comparisons, newest first")
def list_comparisons(request, project_id: int):
    project, _ = project_for_user(request.auth, project_id, Capability.VIEW_DASHBOARDS)
    return [_out(c) for c in SourceComparison.objects.filter(project=project)[:50]]


@router.get("/{project_id}/analysis/comparisons/{comparison_id}", response=ComparisonOut)
def get_comparison(request, project_id: int, comparison_id: int):
    project, _ = project_for_user(request.auth, project_id, Capability.VIEW_DASHBOARDS)
    return _out(get_object_or_404(SourceComparison, project=project, pk=comparison_id))


@router.get("/{project_id}/analysis/comparisons/{comparison_id}/drill",
            summary="The response pairs sources a and b (matrix positions) order most differently")
def drill(request, project_id: int, comparison_id: int, a: int, b: int, top: int = 20):
    project, _ = project_for_user(request.auth, project_id, Capability.VIEW_DASHBOARDS)
    comparison = get_object_or_404(SourceComparison, project=project, pk=comparison_id)
    return selectors.comparison_drill(comparison=comparison, a=a, b=b, top=max(1, min(top, 200))).model_dump(mode="json")


@router.get("/{project_id}/analysis/reward-models/{reward_model_id}/evaluation",
            summary="A reward model's accuracy on held-out human labels (its training labels excluded), by group")
def evaluate_reward_model(request, project_id: int, reward_model_id: int, min_pairs: int = 10):
    project, _ = project_for_user(request.auth, project_id, Capability.VIEW_DASHBOARDS)
    return selectors.reward_model_evaluation(project=project, reward_model_id=reward_model_id,
                                             min_pairs=max(2, min_pairs))


@router.get("/{project_id}/analysis/judges/evaluation",
            summary="Each LM judge's agreement with the human labels of the same comparisons, by group")
def evaluate_judges(request, project_id: int, min_pairs: int = 10):
    project, _ = project_for_user(request.auth, project_id, Capability.VIEW_DASHBOARDS)
    return selectors.judge_evaluation(project=project, min_pairs=max(2, min_pairs))
