from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_POST
from django_htmx.http import HttpResponseClientRefresh

from webapp.datasets import selectors, services
from webapp.datasets.forms import BuildComparisonsForm, DatasetImportForm
from webapp.forms_util import service_errors_as_messages, service_errors_on
from webapp.projects.permissions import Capability, project_for_user, role_allows


@login_required
def dataset_list(request: HttpRequest, project_id: int) -> HttpResponse:
    project, membership = project_for_user(request.user, project_id)
    can_design = role_allows(membership.role, Capability.DESIGN)
    form = DatasetImportForm(request.POST or None, request.FILES or None)
    if request.method == "POST":
        project, _ = project_for_user(request.user, project_id, Capability.DESIGN)
        if form.is_valid():
            data = form.cleaned_data
            with service_errors_on(form):
                dataset = services.dataset_import_upload(
                    project=project, user=request.user, uploaded=data["file"], name=data["name"],
                    source_format=data["format"] or None, mode=data["mode"],
                    preference_labels=data["preference_labels"])
                if dataset.status == "ready":
                    messages.success(request, f"Imported {dataset.row_count} rows into '{dataset.name}'.")
                return redirect("dataset_detail", project_id=project.pk, dataset_id=dataset.pk)
    return render(request, "datasets/dataset_list.html", {
        "project": project, "membership": membership, "can_design": can_design, "form": form,
        "datasets": selectors.dataset_list(project=project),
    }, status=422 if form.errors else 200)


@login_required
def dataset_detail(request: HttpRequest, project_id: int, dataset_id: int) -> HttpResponse:
    project, membership = project_for_user(request.user, project_id)
    dataset = selectors.dataset_get(project=project, dataset_id=dataset_id)
    context = {"project": project, "membership": membership, "dataset": dataset,
               "can_design": role_allows(membership.role, Capability.DESIGN)}
    if request.htmx and request.GET.get("part") == "status":
        if dataset.status != "importing":  # the import ended: show the whole page as it now is
            return HttpResponseClientRefresh()
        return render(request, "datasets/dataset_detail.html#status", context)
    context.update(build_form=BuildComparisonsForm(), rows=selectors.prompt_list(dataset=dataset, limit=20),
                   provenance=_provenance(dataset))
    return render(request, "datasets/dataset_detail.html", context)


def _provenance(dataset) -> dict | None:
    """What a generated version rests on: per policy (and checkpoint step) the responses it holds, the round,
    the sampling settings, when they were generated, and whether the job stopped early."""
    if dataset.job_id is None and not dataset.generation:
        return None
    from django.db.models import Count, Max, Min

    from webapp.datasets.models import Response

    by_policy = list(Response.objects.filter(prompt__dataset=dataset).values(
        "model_name", "policy_id", "checkpoint_step", "round").annotate(
        n=Count("id"), first=Min("generated_at"), last=Max("generated_at")).order_by("model_name", "checkpoint_step"))
    spec = dataset.generation or {}
    expected = len(spec.get("policy_ids", [])) * spec.get("samples_per_prompt", 1) * (
        dataset.parent.row_count if dataset.parent_id else 0)
    return {"by_policy": by_policy, "spec": spec, "expected": expected,
            "sampling": {k: spec.get(k) for k in ("samples_per_prompt", "temperature", "top_p", "max_new_tokens",
                                                  "seed", "prompt_overflow") if k in spec}}


@login_required
@require_POST
def dataset_delete(request: HttpRequest, project_id: int, dataset_id: int) -> HttpResponse:
    project, _ = project_for_user(request.user, project_id, Capability.DESIGN)
    dataset = selectors.dataset_get(project=project, dataset_id=dataset_id)
    with service_errors_as_messages(request):
        services.dataset_delete(dataset=dataset)
        messages.success(request, f"Deleted dataset '{dataset.name}'.")
        return redirect("dataset_list", project_id=project.pk)
    return redirect("dataset_detail", project_id=project.pk, dataset_id=dataset.pk)
