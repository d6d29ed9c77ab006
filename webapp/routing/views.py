from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_POST
from django_htmx.http import HttpResponseClientRefresh

from webapp.forms_util import service_errors_as_messages, service_errors_on
from webapp.judging.lm_labels import lm_runs_reconcile
from webapp.projects.permissions import Capability, project_for_user, role_allows
from webapp.routing import selectors, services
from webapp.routing.forms import PlanForm, TagForm
from webapp.routing.embeddings import embeddings_job_create, responses_without_embedding
from webapp.routing.reward_scores import reward_scores_job_create
from webapp.routing.steps_plan import steps_plan_reconcile, steps_pool_queryset
from webapp.routing.models import PlanStatus, RoutingPlan
from webapp.routing.tagging import DEFAULT_CATEGORIES, tag_summary, tagging_job_create, untagged_prompts

DECISIONS_SHOWN = 300


@login_required
def routing_home(request: HttpRequest, project_id: int) -> HttpResponse:
    project, membership = project_for_user(request.user, project_id, Capability.VIEW_DASHBOARDS)
    form = PlanForm(request.POST or None, project=project)
    if request.method == "POST":
        project_for_user(request.user, project_id, Capability.DESIGN)
        if form.is_valid():
            data = form.cleaned_data
            with service_errors_on(form):
                plan = services.routing_plan_create(
                    project=project, user=request.user, budget=data["budget"], strategy=data["strategy"],
                    judge_config_id=data["judge_config"], template_id=data["template"], seed=data["seed"] or 0)
                return redirect("routing_plan", project_id=project.pk, plan_id=plan.pk)
    tag_form = TagForm(project=project, initial={"categories": DEFAULT_CATEGORIES})
    return _home(request, project, form=form, tag_form=tag_form,
                 can_design=role_allows(membership.role, Capability.DESIGN), status=422 if form.errors else 200)


def _home(request, project, *, form, tag_form, can_design: bool, status: int = 200) -> HttpResponse:
    return render(request, "routing/home.html", {
        "project": project, "form": form, "plans": selectors.plan_list(project=project)[:30],
        "pool_size": services.routing_pool_queryset(project=project).count(),  # not loaded: 1M rows
        "steps_pool_size": steps_pool_queryset(project=project).count(),
        "missing_embeddings": responses_without_embedding(project=project).count(),
        **_reward_model_counts(project), "tag_form": tag_form,
        "tags": tag_summary(project=project), "untagged": untagged_prompts(project=project, limit=20),
        "can_design": can_design}, status=status)


@login_required
def plan_detail(request: HttpRequest, project_id: int, plan_id: int) -> HttpResponse:
    project, membership = project_for_user(request.user, project_id, Capability.VIEW_DASHBOARDS)
    lm_runs_reconcile(project=project)
    plan = get_object_or_404(RoutingPlan.objects.select_related("planning_job"), project=project, pk=plan_id)
    steps_plan_reconcile(plan=plan)
    if request.htmx and request.GET.get("part") == "status":
        if plan.status != PlanStatus.PENDING:  # planned (or failed): the whole page has something new to show
            return HttpResponseClientRefresh()
        return render(request, "routing/_plan_status.html", {"project": project, "plan": plan})
    return render(request, "routing/plan.html", {
        "project": project, "plan": plan, "decisions": selectors.plan_decisions(plan=plan)[:DECISIONS_SHOWN],
        "counts": selectors.decision_counts(plan=plan), "shown_limit": DECISIONS_SHOWN,
        "form": PlanForm(project=project, initial={"judge_config": plan.judge_config_id,
                                                   "template": plan.template_id}),
        "can_design": role_allows(membership.role, Capability.DESIGN)})


@login_required
@require_POST
def plan_approve(request: HttpRequest, project_id: int, plan_id: int) -> HttpResponse:
    project, _ = project_for_user(request.user, project_id, Capability.DESIGN)
    plan = get_object_or_404(RoutingPlan, project=project, pk=plan_id)
    with service_errors_as_messages(request):
        plan = services.routing_plan_approve(plan=plan, user=request.user,
                                             judge_config_id=request.POST.get("judge_config") or None,
                                             template_id=request.POST.get("template") or None)
        messages.success(request, f"Plan {plan.pk} approved: {plan.n_human} comparisons in the annotation queue, "
                                  f"{plan.n_lm} for the LM judge.")
    return redirect("routing_plan", project_id=project.pk, plan_id=plan.pk)


@login_required
@require_POST
def plan_rerun(request: HttpRequest, project_id: int, plan_id: int) -> HttpResponse:
    project, _ = project_for_user(request.user, project_id, Capability.DESIGN)
    plan = get_object_or_404(RoutingPlan, project=project, pk=plan_id)
    with service_errors_as_messages(request):
        new = services.routing_plan_rerun(plan=plan, user=request.user)
        return redirect("routing_plan", project_id=project.pk, plan_id=new.pk)
    return redirect("routing_plan", project_id=project.pk, plan_id=plan.pk)


@login_required
def feature_agreement(request: HttpRequest, project_id: int) -> HttpResponse:
    project, _ = project_for_user(request.user, project_id, Capability.VIEW_DASHBOARDS)
    return render(request, "routing/_feature_agreement.html", {"project": project,
                                                               **selectors.feature_agreement(project=project)})


def _queue_signal_job(request: HttpRequest, project_id: int, create, what: str) -> HttpResponse:
    """Queue a job that computes a routing signal; its page shows the progress."""
    project, _ = project_for_user(request.user, project_id, Capability.DESIGN)
    with service_errors_as_messages(request):
        job = create(project=project, user=request.user)
        messages.success(request, f"{what} job {job.pk} queued; re-run plans when it has finished.")
        return redirect("job_detail", project_id=project.pk, job_id=job.pk)
    return redirect("routing_home", project_id=project.pk)


@login_required
@require_POST
def embeddings_compute(request: HttpRequest, project_id: int) -> HttpResponse:
    return _queue_signal_job(request, project_id, embeddings_job_create, "Embedding")


@login_required
@require_POST
def tags_compute(request: HttpRequest, project_id: int) -> HttpResponse:
    project, _ = project_for_user(request.user, project_id, Capability.DESIGN)
    form = TagForm(request.POST, project=project)
    if form.is_valid():
        data = form.cleaned_data
        with service_errors_on(form):
            job = tagging_job_create(project=project, user=request.user, judge_config_id=data["judge_config"],
                                     categories=data["categories"], multi_label=data["multi_label"])
            messages.success(request, f"Tagging job {job.pk} queued; plans computed after it has finished get "
                                      "category features.")
            return redirect("job_detail", project_id=project.pk, job_id=job.pk)
    return _home(request, project, form=PlanForm(project=project), tag_form=form, can_design=True, status=422)


@login_required
@require_POST
def reward_scores_compute(request: HttpRequest, project_id: int) -> HttpResponse:
    return _queue_signal_job(request, project_id, reward_scores_job_create, "Scoring")


def _reward_model_counts(project) -> dict[str, int]:
    from webapp.routing.models import ResponseRewardScore
    from webapp.training.selectors import reward_model_list

    models = reward_model_list(project=project)
    scored = (ResponseRewardScore.objects.filter(reward_model__in=models).values("reward_model").distinct().count())
    return {"registered_models": models.count(), "scored_models": scored}
