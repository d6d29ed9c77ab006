from datetime import datetime
from typing import Any

from django.shortcuts import get_object_or_404
from ninja import Router, Schema, Status
from pydantic import Field

from webapp.jobs.apis import JobOut
from webapp.judging.lm_labels import lm_runs_reconcile
from webapp.projects.permissions import Capability, project_for_user
from webapp.routing import selectors, services
from webapp.routing.models import RoutingPlan

router = Router(tags=["routing"])


class PlanIn(Schema):
    budget: str = Field(..., description="For people: a share ('25%', '0.25') or a count ('300').")
    strategy: str = Field("uncertainty", description=(
        "Pairwise: uncertainty, topk, optimal_pos, random. Step items: steps_agreement (people get the items "
        "of the step-count buckets where measured human-LM step agreement is lowest; random below the overlap)."))
    judge_config_id: int | None = None
    template_id: int | None = None
    seed: int = 0


class ApproveIn(Schema):
    judge_config_id: int | None = None
    template_id: int | None = None


class DecisionOut(Schema):
    comparison_id: int
    route: str
    score: float
    top_features: list[dict[str, Any]]
    status: str
    reason: str


class PlanOut(Schema):
    id: int
    strategy: str = Field(..., description="The strategy that routed the plan.")
    requested_strategy: str = Field("", description="The strategy asked for; differs when the gate fell back.")
    fallback_reason: str = Field("", description="Why topk/optimal_pos was not used ('' when it was).")
    evidence: dict[str, Any] = Field(default_factory=dict, description=(
        "topk/optimal_pos: rlcore RoutingEvidence — gain_over_random (held-out), interval_low/high, level, "
        "n_pilot, n_pilot_scored, n_simulations, cv_r2, gain_by_half, passed, failures."))
    budget_text: str
    status: str
    n_total: int
    n_human: int
    n_lm: int
    predicted_score: float | None
    predicted_score_all_lm: float | None
    predicted_gain: float | None
    top_features: list[dict[str, Any]]
    model_info: dict[str, Any]
    judge_config_id: int | None
    template_id: int | None
    job_id: int | None = Field(None, description="The LM labelling job an approval started.")
    planning_job_id: int | None = Field(None, description=(
        "The job computing the plan when the pool is above ROUTING_INLINE_POOL (status 'pending' until it ends)."))
    error: str = Field("", description="Why planning failed (status 'failed').")
    parent_id: int | None
    created_at: datetime
    decision_counts: dict[str, int] = {}


class PlanDetailOut(PlanOut):
    decisions: list[DecisionOut]


def _out(plan: RoutingPlan, with_decisions: bool = False) -> dict:
    data = {f: getattr(plan, f) for f in PlanOut.model_fields if hasattr(plan, f)}
    data["decision_counts"] = selectors.decision_counts(plan=plan)
    if with_decisions:
        data["decisions"] = list(plan.decisions.order_by("id").values(
            "comparison_id", "route", "score", "top_features", "status", "reason"))
    return data


def _plan(request, project_id: int, plan_id: int, capability=Capability.VIEW_DASHBOARDS):
    project, _ = project_for_user(request.auth, project_id, capability)
    return get_object_or_404(RoutingPlan, project=project, pk=plan_id)


@router.post("/{project_id}/routing/embeddings", response={201: JobOut},
             summary="Queue a job embedding every response that has no embedding yet (MiniLM)")
def compute_embeddings(request, project_id: int):
    from webapp.routing.embeddings import embeddings_job_create

    project, _ = project_for_user(request.auth, project_id, Capability.DESIGN)
    return Status(201, embeddings_job_create(project=project, user=request.auth))


class TagIn(Schema):
    judge_config_id: int | None = Field(None, description="The judge config whose model tags the prompts.")
    categories: str | list[str] = Field(..., description="Category names: 'math, code, other' or a list.")
    multi_label: bool = False


@router.post("/{project_id}/routing/tags", response={201: JobOut},
             summary="Queue a job tagging every prompt with one of the categories, by an LM (category features)")
def tag_prompts(request, project_id: int, body: TagIn):
    from webapp.routing.tagging import tagging_job_create

    project, _ = project_for_user(request.auth, project_id, Capability.DESIGN)
    return Status(201, tagging_job_create(project=project, user=request.auth, judge_config_id=body.judge_config_id,
                                          categories=body.categories, multi_label=body.multi_label))


@router.get("/{project_id}/routing/tags", summary="Prompts per LM category tag; prompts without one and why")
def prompt_tags(request, project_id: int):
    from webapp.routing.tagging import tag_summary, untagged_prompts

    project, _ = project_for_user(request.auth, project_id, Capability.VIEW_DASHBOARDS)
    return {**tag_summary(project=project), "untagged": untagged_prompts(project=project)}


@router.post("/{project_id}/routing/reward-scores", response={201: JobOut},
             summary="Queue a job scoring every response with every registered reward model (RM disagreement)")
def compute_reward_scores(request, project_id: int):
    from webapp.routing.reward_scores import reward_scores_job_create

    project, _ = project_for_user(request.auth, project_id, Capability.DESIGN)
    return Status(201, reward_scores_job_create(project=project, user=request.auth))


@router.get("/{project_id}/routing/plans", response=list[PlanOut], summary="Routing plans, newest first")
def list_plans(request, project_id: int):
    project, _ = project_for_user(request.auth, project_id, Capability.VIEW_DASHBOARDS)
    return [_out(p) for p in selectors.plan_list(project=project)[:100]]


@router.post("/{project_id}/routing/plans", response={201: PlanDetailOut, 202: PlanDetailOut},
             summary="Compute a draft plan for the comparisons nobody has labelled yet (201); above "
                     "ROUTING_INLINE_POOL a pending plan computed by a job (202: poll it)")
def create_plan(request, project_id: int, body: PlanIn):
    from webapp.routing.models import PlanStatus

    project, _ = project_for_user(request.auth, project_id, Capability.DESIGN)
    plan = services.routing_plan_create(project=project, user=request.auth, budget=body.budget,
                                        strategy=body.strategy, judge_config_id=body.judge_config_id,
                                        template_id=body.template_id, seed=body.seed)
    return Status(202 if plan.status == PlanStatus.PENDING else 201, _out(plan, True))


@router.get("/{project_id}/routing/plans/{plan_id}", response=PlanDetailOut,
            summary="A plan with every comparison's route, reasons and status (LM labels recorded so far)")
def get_plan(request, project_id: int, plan_id: int):
    plan = _plan(request, project_id, plan_id)
    lm_runs_reconcile(project=plan.project)
    from webapp.routing.steps_plan import steps_plan_reconcile

    steps_plan_reconcile(plan=plan)
    plan.refresh_from_db()
    return _out(plan, True)


@router.post("/{project_id}/routing/plans/{plan_id}/approve", response=PlanDetailOut,
             summary="Apply it: the human side fills the annotation queue, an LM job labels the rest")
def approve_plan(request, project_id: int, plan_id: int, body: ApproveIn):
    plan = _plan(request, project_id, plan_id, Capability.DESIGN)
    plan = services.routing_plan_approve(plan=plan, user=request.auth, judge_config_id=body.judge_config_id,
                                         template_id=body.template_id)
    return _out(plan, True)


@router.post("/{project_id}/routing/plans/{plan_id}/rerun", response={201: PlanDetailOut, 202: PlanDetailOut},
             summary="The same settings on today's pool and signals")
def rerun_plan(request, project_id: int, plan_id: int):
    plan = _plan(request, project_id, plan_id, Capability.DESIGN)
    from webapp.routing.models import PlanStatus

    new = services.routing_plan_rerun(plan=plan, user=request.auth)
    return Status(202 if new.status == PlanStatus.PENDING else 201, _out(new, True))


@router.get("/{project_id}/routing/agreement", summary="Agreement split human-human / human-LM / LM-LM, and "
                                                       "human-LM agreement per routing feature")
def agreement(request, project_id: int):
    project, _ = project_for_user(request.auth, project_id, Capability.VIEW_DASHBOARDS)
    result = selectors.feature_agreement(project=project)
    return {"by_pair_kind": {k: v.model_dump() for k, v in result["report"].by_pair_kind.items()},
            "by_feature": {k: v.model_dump() for k, v in result["by_feature"].items()},
            "n_both": result["n_both"]}
