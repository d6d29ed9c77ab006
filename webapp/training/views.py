from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import ValidationError
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_POST

from webapp.forms_util import apply_service_errors
from webapp.jobs.models import Job
from webapp.projects.permissions import Capability, project_for_user, role_allows
from webapp.training import selectors, services
from webapp.training.forms import GRPO_FIELDS, REWARD_MODEL_FIELDS, GRPOLaunchForm, RewardModelLaunchForm, spec_params
from webapp.training.models import RewardModel


def _clone_initial(project, request, kind: str, names: list[str]) -> dict:
    """Initial form values from an earlier job (?clone=<job id>), to launch it again with edits."""
    clone_id = request.GET.get("clone", "")
    if not clone_id.isdigit():
        return {}
    source = get_object_or_404(Job, project=project, pk=int(clone_id), kind=kind)
    spec = source.spec or {}
    initial = {}
    for name in names:  # ``block__field`` is field ``field`` of the spec's nested block ``block`` (forms.py)
        block, _, field = name.rpartition("__")
        holder = (spec.get(block) or {}) if block else spec
        if isinstance(holder, dict) and field in holder and holder[field] is not None:
            initial[name] = holder[field]
    initial["queue"] = source.queue
    if kind == services.GRPO_KIND:
        initial.update(policy=spec.get("policy", ""), dataset=spec.get("dataset_id"),
                       reward_spec_version=spec.get("reward_spec_version_id"))
    initial["name"] = source.title.split(": ", 1)[-1] + " (clone)"
    return initial


@login_required
def training_home(request: HttpRequest, project_id: int) -> HttpResponse:
    project, membership = project_for_user(request.user, project_id, Capability.VIEW_DASHBOARDS)
    return render(request, "training/home.html", {
        "project": project, "reward_models": selectors.reward_model_list(project=project),
        "policies": selectors.known_policies(project=project),
        "can_launch": role_allows(membership.role, Capability.DESIGN),
        "jobs": Job.objects.filter(project=project, kind__in=services.TRAINING_KINDS)[:50],
    })


@login_required
def reward_model_launch(request: HttpRequest, project_id: int) -> HttpResponse:
    project, _ = project_for_user(request.user, project_id, Capability.DESIGN)
    form = RewardModelLaunchForm(request.POST or None,
                                 initial=_clone_initial(project, request, services.REWARD_MODEL_KIND, REWARD_MODEL_FIELDS))
    if request.method == "POST" and form.is_valid():
        data = form.cleaned_data
        try:
            job = services.reward_model_job_create(
                project=project, user=request.user, name=data["name"], params=spec_params(form, REWARD_MODEL_FIELDS),
                tie_policy=data["tie_policy"], conversational=data["conversational"], source=data["source"] or None,
                queue=data["queue"])
        except ValidationError as exc:
            apply_service_errors(form, exc)
        else:
            messages.success(request, f"Reward-model job {job.pk} queued.")
            return redirect("job_detail", project_id=project.pk, job_id=job.pk)
    return render(request, "training/launch.html", {"project": project, "form": form, "what": "reward model"},
                  status=422 if form.errors else 200)


@login_required
def grpo_launch(request: HttpRequest, project_id: int) -> HttpResponse:
    project, _ = project_for_user(request.user, project_id, Capability.DESIGN)
    form = GRPOLaunchForm(request.POST or None, project=project,
                          initial=_clone_initial(project, request, services.GRPO_KIND, GRPO_FIELDS))
    if request.method == "POST" and form.is_valid():
        data = form.cleaned_data
        try:
            job = services.grpo_job_create(
                project=project, user=request.user, name=data["name"], dataset=data["dataset"],
                reward_spec_version=data["reward_spec_version"], policy=data["policy"],
                params=spec_params(form, GRPO_FIELDS), queue=data["queue"])
        except ValidationError as exc:
            apply_service_errors(form, exc)
        else:
            messages.success(request, f"GRPO job {job.pk} queued.")
            warning = services.grpo_clip_warning(spec_params(form, GRPO_FIELDS))
            if warning:
                messages.warning(request, warning)
            return redirect("job_detail", project_id=project.pk, job_id=job.pk)
    return render(request, "training/launch.html", {"project": project, "form": form, "what": "GRPO policy"},
                  status=422 if form.errors else 200)


@login_required
@require_POST
def job_resume(request: HttpRequest, project_id: int, job_id: int) -> HttpResponse:
    project, _ = project_for_user(request.user, project_id, Capability.DESIGN)
    job = get_object_or_404(Job, project=project, pk=job_id)
    try:
        resumed = services.job_resume(job=job, user=request.user)
    except ValidationError as exc:
        for message in exc.messages:
            messages.error(request, message)
        return redirect("job_detail", project_id=project.pk, job_id=job.pk)
    messages.success(request, f"Resuming from the last checkpoint as job {resumed.pk}.")
    return redirect("job_detail", project_id=project.pk, job_id=resumed.pk)


@login_required
@require_POST
def reward_model_delete(request: HttpRequest, project_id: int, model_id: int) -> HttpResponse:
    project, _ = project_for_user(request.user, project_id, Capability.DESIGN)
    services.reward_model_delete(reward_model=get_object_or_404(RewardModel, project=project, pk=model_id))
    messages.success(request, "Reward model deleted from the registry.")
    return redirect("training_home", project_id=project.pk)
