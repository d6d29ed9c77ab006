from django.contrib.auth.decorators import login_required
from django.core.exceptions import ValidationError
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django_htmx.http import HttpResponseClientRefresh

from webapp.analysis import selectors, services
from webapp.analysis.models import ComparisonState, SourceComparison
from webapp.projects.permissions import Capability, project_for_user

DRILL_TOP = 20


def _comparison(request: HttpRequest, project_id: int, comparison_id: int):
    project, _ = project_for_user(request.user, project_id, Capability.VIEW_DASHBOARDS)
    return project, get_object_or_404(SourceComparison, project=project, pk=comparison_id)


@login_required
def analysis_home(request: HttpRequest, project_id: int) -> HttpResponse:
    """Pick reward sources and a response set; past comparisons below."""
    from webapp.datasets.models import Dataset, DatasetStatus

    project, _ = project_for_user(request.user, project_id, Capability.VIEW_DASHBOARDS)
    errors: dict[str, list[str]] = {}
    chosen = request.POST.getlist("sources")
    if request.method == "POST":
        try:
            comparison = services.source_comparison_create(
                project=project, user=request.user, dataset_id=int(request.POST.get("dataset_id") or 0),
                source_keys=chosen)
        except ValidationError as exc:
            errors = exc.message_dict
        else:
            return redirect("analysis_comparison", project_id=project.pk, comparison_id=comparison.pk)
    return render(request, "analysis/home.html", {
        "project": project, "choices": selectors.source_choices(project=project), "chosen": chosen,
        "datasets": Dataset.objects.filter(project=project, status=DatasetStatus.READY).order_by("name"),
        "comparisons": selectors.comparison_list(project=project)[:30], "errors": errors,
        "sync_limit": selectors.inline_response_limit()}, status=422 if errors else 200)


@login_required
def comparison_detail(request: HttpRequest, project_id: int, comparison_id: int) -> HttpResponse:
    project, comparison = _comparison(request, project_id, comparison_id)
    context = {"project": project, "comparison": comparison, "result": comparison.result,
               "progress": selectors.comparison_progress(comparison=comparison)}
    if request.htmx and request.GET.get("part") == "status":
        if comparison.state != ComparisonState.PENDING:  # scoring ended: show the whole page as it now is
            return HttpResponseClientRefresh()
        return render(request, "analysis/comparison.html#status", context)
    if comparison.state == ComparisonState.READY:
        context["heatmap"] = selectors.heatmap_cells(comparison=comparison)
    return render(request, "analysis/comparison.html", context)


@login_required
def comparison_drill(request: HttpRequest, project_id: int, comparison_id: int) -> HttpResponse:
    project, comparison = _comparison(request, project_id, comparison_id)
    try:
        drill = selectors.comparison_drill(comparison=comparison, a=int(request.GET.get("a", 0)),
                                           b=int(request.GET.get("b", 1)), top=DRILL_TOP)
    except (ValidationError, ValueError) as exc:
        message = "; ".join(exc.messages) if isinstance(exc, ValidationError) else "a and b must be source numbers"
        return render(request, "analysis/drill.html", {"project": project, "comparison": comparison,
                                                       "error": message}, status=422)
    return render(request, "analysis/drill.html", {"project": project, "comparison": comparison, "drill": drill})


@login_required
def reward_model_evaluation(request: HttpRequest, project_id: int, reward_model_id: int) -> HttpResponse:
    project, _ = project_for_user(request.user, project_id, Capability.VIEW_DASHBOARDS)
    context = {"project": project}
    try:
        context.update(selectors.reward_model_evaluation(project=project, reward_model_id=reward_model_id))
    except ValidationError as exc:
        context["error"] = "; ".join(exc.messages)
    else:
        context["diagram"] = selectors.reliability_diagram(evaluation=context["evaluation"])
    context["judges"] = [{**j, "diagram": selectors.reliability_diagram(evaluation=j["evaluation"]) if j["evaluation"]
                          else None} for j in selectors.judge_evaluation(project=project)]
    return render(request, "analysis/evaluation.html", context, status=422 if "error" in context else 200)
