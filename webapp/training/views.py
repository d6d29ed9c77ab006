from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_POST

from webapp.forms_util import service_errors_as_messages, service_errors_on
from webapp.jobs.kinds import GRPO_KIND, PRM_KIND, REWARD_MODEL_KIND, TRAINING_KINDS
from webapp.jobs.models import Job
from webapp.projects.permissions import Capability, project_for_user, role_allows
from webapp.training import selectors, services
from webapp.training.forms import (
    GenerationLaunchForm,
    GRPOLaunchForm,
    PolicyRegisterForm,
    PRMLaunchForm,
    RewardModelLaunchForm,
)
from webapp.settings_forms import SettingsForm, settings_field_names
from webapp.training.models import Policy, ProcessRewardModel, RewardModel


def _clone_initial(project, request, kind: str, form_class: type[SettingsForm]) -> dict:
    """Initial form values from an earlier job (?clone=<job id>), to launch it again with edits."""
    clone_id = request.GET.get("clone", "")
    if not clone_id.isdigit():
        return {}
    source = get_object_or_404(Job, project=project, pk=int(clone_id), kind=kind)
    spec = source.spec or {}
    initial = {}
    # ``block__field`` is field ``field`` of the spec's nested block ``block`` (forms.py)
    for name in settings_field_names(form_class.settings_model):
        block, _, field = name.rpartition("__")
        holder = (spec.get(block) or {}) if block else spec
        if isinstance(holder, dict) and field in holder and holder[field] is not None:
            initial[name] = holder[field]
    initial["queue"] = source.queue
    if kind == GRPO_KIND:
        initial.update(policy=spec.get("policy", ""), dataset=spec.get("dataset_id"),
                       reward_spec_version=spec.get("reward_spec_version_id"))
        # the spec composer's "save and relaunch" hands over the version it just saved (the form checks the project)
        if (version := request.GET.get("reward_spec_version", "")).isdigit():
            initial["reward_spec_version"] = int(version)
    initial["name"] = source.title.split(": ", 1)[-1] + " (clone)"
    return initial


def _home(request: HttpRequest, project, membership, *, register_form=None, generate_form=None) -> HttpResponse:
    """The Training page; a refused registration or generation re-renders it with the errors (422)."""
    from webapp.jobs.kinds import GENERATE_KIND

    register_form = register_form or PolicyRegisterForm(project=project)
    generate_form = generate_form or GenerationLaunchForm(project=project)
    return render(request, "training/home.html", {
        "project": project, "reward_models": selectors.reward_model_list(project=project),
        "process_reward_models": selectors.prm_list(project=project),
        "policies": selectors.known_policies(project=project),
        "registry": [(policy, selectors.policy_label(policy)) for policy in selectors.policy_list(project=project)],
        "register_form": register_form, "generate_form": generate_form,
        "can_launch": role_allows(membership.role, Capability.DESIGN),
        "jobs": Job.objects.filter(project=project, kind__in=TRAINING_KINDS)[:50],
        "generation_jobs": Job.objects.filter(project=project, kind=GENERATE_KIND)[:20],
    }, status=422 if register_form.errors or generate_form.errors else 200)


@login_required
def training_home(request: HttpRequest, project_id: int) -> HttpResponse:
    project, membership = project_for_user(request.user, project_id, Capability.VIEW_DASHBOARDS)
    return _home(request, project, membership)


@login_required
@require_POST
def policy_register(request: HttpRequest, project_id: int) -> HttpResponse:
    project, membership = project_for_user(request.user, project_id, Capability.DESIGN)
    form = PolicyRegisterForm(request.POST, project=project)
    if form.is_valid():
        data = form.cleaned_data
        with service_errors_on(form):
            policy = services.policy_register(
                project=project, user=request.user, name=data["name"], source=data["source"],
                location=data["location"], endpoint_url=data["endpoint_url"], api_key=data["api_key"],
                api_key_env=data["api_key_env"], job=data["job"], step=data["step"])
            messages.success(request, f"Policy '{policy.name}' registered.")
            return redirect("training_home", project_id=project.pk)
    return _home(request, project, membership, register_form=form)


@login_required
@require_POST
def policy_delete(request: HttpRequest, project_id: int, policy_id: int) -> HttpResponse:
    project, _ = project_for_user(request.user, project_id, Capability.DESIGN)
    policy = get_object_or_404(Policy, project=project, pk=policy_id, deleted_at__isnull=True)
    services.policy_delete(policy=policy)
    messages.success(request, f"Policy '{policy.name}' removed from the registry; responses it wrote keep it.")
    return redirect("training_home", project_id=project.pk)


@login_required
@require_POST
def generation_launch(request: HttpRequest, project_id: int) -> HttpResponse:
    project, membership = project_for_user(request.user, project_id, Capability.DESIGN)
    form = GenerationLaunchForm(request.POST, project=project)
    if form.is_valid():
        data = form.cleaned_data
        with service_errors_on(form):
            job = services.generation_job_create(
                project=project, user=request.user, dataset=data["dataset"], policies=list(data["policies"]),
                settings=data["settings"], round=data["round"])
            messages.success(request, f"Generation job {job.pk} queued.")
            return redirect("job_detail", project_id=project.pk, job_id=job.pk)
    return _home(request, project, membership, generate_form=form)


@login_required
@require_POST
def generation_rerun(request: HttpRequest, project_id: int, job_id: int) -> HttpResponse:
    from webapp.jobs.kinds import GENERATE_KIND

    project, _ = project_for_user(request.user, project_id, Capability.DESIGN)
    job = get_object_or_404(Job, project=project, pk=job_id, kind=GENERATE_KIND)
    with service_errors_as_messages(request):
        again = services.generation_rerun(job=job, user=request.user)
        messages.success(request, f"Generating what is missing as job {again.pk}.")
        return redirect("job_detail", project_id=project.pk, job_id=again.pk)
    return redirect("job_detail", project_id=project.pk, job_id=job.pk)


def _launch_page(request: HttpRequest, project_id: int, *, form_class: type[SettingsForm], kind: str, what: str,
                 queued: str, launch) -> HttpResponse:
    """A training launch page: the form (cloned from ``?clone=<job>``), and on a valid POST ``launch(project,
    cleaned_data)``, the service call, whose refusal is shown on the form. ``what`` names the run in the page,
    ``queued`` the job in the message that it was queued."""
    project, _ = project_for_user(request.user, project_id, Capability.DESIGN)
    form = form_class(request.POST or None, project=project,
                      initial=_clone_initial(project, request, kind, form_class))
    if request.method == "POST" and form.is_valid():
        with service_errors_on(form):
            job = launch(project, form.cleaned_data)
            messages.success(request, f"{queued} {job.pk} queued.")
            if kind == GRPO_KIND and (warning := form.cleaned_data["settings"].clip_warning()):
                messages.warning(request, warning)
            return redirect("job_detail", project_id=project.pk, job_id=job.pk)
    return render(request, "training/launch.html", {"project": project, "form": form, "what": what},
                  status=422 if form.errors else 200)


@login_required
def reward_model_launch(request: HttpRequest, project_id: int) -> HttpResponse:
    return _launch_page(
        request, project_id, form_class=RewardModelLaunchForm, kind=REWARD_MODEL_KIND, what="reward model",
        queued="Reward-model job",
        launch=lambda project, data: services.reward_model_job_create(
            project=project, user=request.user, name=data["name"], settings=data["settings"],
            tie_policy=data["tie_policy"], conversational=data["conversational"], source=data["source"] or None,
            queue=data["queue"]))


@login_required
def prm_launch(request: HttpRequest, project_id: int) -> HttpResponse:
    return _launch_page(
        request, project_id, form_class=PRMLaunchForm, kind=PRM_KIND, what="process reward model",
        queued="Process-reward-model job",
        launch=lambda project, data: services.prm_job_create(
            project=project, user=request.user, name=data["name"], settings=data["settings"],
            source=data["source"] or None, queue=data["queue"]))


@login_required
def grpo_launch(request: HttpRequest, project_id: int) -> HttpResponse:
    return _launch_page(
        request, project_id, form_class=GRPOLaunchForm, kind=GRPO_KIND, what="GRPO policy", queued="GRPO job",
        launch=lambda project, data: services.grpo_job_create(
            project=project, user=request.user, name=data["name"], dataset=data["dataset"],
            reward_spec_version=data["reward_spec_version"], policy=data["policy"], settings=data["settings"],
            queue=data["queue"]))


@login_required
@require_POST
def prm_delete(request: HttpRequest, project_id: int, model_id: int) -> HttpResponse:
    project, _ = project_for_user(request.user, project_id, Capability.DESIGN)
    services.prm_delete(prm=get_object_or_404(ProcessRewardModel, project=project, pk=model_id,
                                              deleted_at__isnull=True))
    messages.success(request, "Process reward model deleted from the registry.")
    return redirect("training_home", project_id=project.pk)


@login_required
@require_POST
def job_resume(request: HttpRequest, project_id: int, job_id: int) -> HttpResponse:
    project, _ = project_for_user(request.user, project_id, Capability.DESIGN)
    job = get_object_or_404(Job, project=project, pk=job_id)
    with service_errors_as_messages(request):
        resumed = services.job_resume(job=job, user=request.user)
        messages.success(request, f"Resuming from the last checkpoint as job {resumed.pk}.")
        return redirect("job_detail", project_id=project.pk, job_id=resumed.pk)
    return redirect("job_detail", project_id=project.pk, job_id=job.pk)


@login_required
@require_POST
def reward_model_delete(request: HttpRequest, project_id: int, model_id: int) -> HttpResponse:
    project, _ = project_for_user(request.user, project_id, Capability.DESIGN)
    services.reward_model_delete(reward_model=get_object_or_404(RewardModel, project=project, pk=model_id))
    messages.success(request, "Reward model deleted from the registry.")
    return redirect("training_home", project_id=project.pk)


@login_required
def generation_status(request: HttpRequest, project_id: int, job_id: int) -> HttpResponse:
    """The job page's generation fragment: the dataset version it writes (partial or not) and a re-run."""
    from webapp.jobs.kinds import GENERATE_KIND

    project, membership = project_for_user(request.user, project_id, Capability.VIEW_DASHBOARDS)
    job = get_object_or_404(Job, project=project, pk=job_id, kind=GENERATE_KIND)
    return render(request, "training/_generation_status.html", {
        "project": project, "job": job, "version": selectors.generated_version(job=job),
        "can_rerun": role_allows(membership.role, Capability.DESIGN) and job.state in ("failed", "cancelled")})
