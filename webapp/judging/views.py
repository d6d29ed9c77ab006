from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import ValidationError
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_POST

from webapp.forms_util import service_errors_on
from webapp.judging import configs, lm_labels, prompt_templates, runs, selectors
from webapp.judging.forms import JudgeConfigForm, TemplateForm
from webapp.judging.models import JudgeConfig
from webapp.projects.permissions import Capability, project_for_user, role_allows
from webapp.rubrics.selectors import annotation_rubric_for

CONFIG_FIELDS = ("name", "backend", "endpoint", "model", "api_key_env", "max_concurrency", "timeout_s", "max_retries")


@login_required
def judge_home(request: HttpRequest, project_id: int) -> HttpResponse:
    project, membership = project_for_user(request.user, project_id, Capability.VIEW_DASHBOARDS)
    lm_labels.lm_runs_reconcile(project=project)
    templates = selectors.template_latest_list(project=project)
    recent = list(selectors.run_list(project=project)[:20])
    summaries = selectors.run_summaries(recent)
    return render(request, "judging/home.html", {
        "project": project, "can_design": role_allows(membership.role, Capability.DESIGN),
        "configs": selectors.judge_config_list(project=project),
        "templates": templates,
        "runs": [(run, summaries[run.pk]) for run in recent],
        "rankings_waiting": selectors.rankings_awaiting_label(project=project).count(),
        "rank_templates": [t for t in templates if t.mode == "rank"],
        "steps_waiting": selectors.step_items_awaiting_prelabel(project=project).count(),
        "steps_templates": [t for t in templates if t.mode == "steps"],
        "annotation_rubric": annotation_rubric_for(project),
    })


@login_required
def judge_run(request: HttpRequest, project_id: int, job_id: int) -> HttpResponse:
    """One LM labelling run: what its labels are worth, and every comparison's outcome with its reason."""
    project, _ = project_for_user(request.user, project_id, Capability.VIEW_DASHBOARDS)
    lm_labels.lm_runs_reconcile(project=project)
    run = get_object_or_404(selectors.run_list(project=project), job_id=job_id)
    if request.GET.get("part") == "summary":  # the job page shows it beside the job's state
        return render(request, "judging/_run_summary.html", {"summary": selectors.run_summaries([run])[run.pk]})
    return render(request, "judging/run.html", {
        "project": project, "run": run, "summary": selectors.run_summaries([run])[run.pk],
        "attempts": selectors.attempts_for(job_id=job_id).select_related("label")[:500]})


def _lm_labelling_start(request: HttpRequest, project_id: int, start, *, no_judge: str, started: str,
                        **options) -> HttpResponse:
    """Start an LM labelling run (``start``, a service of runs) with the judge and template the form chose.

    ``started`` is the success message, formatted with the job's id (``job``), how many items it labels
    (``count``) and the judge's name (``judge``).
    """
    project, _ = project_for_user(request.user, project_id, Capability.DESIGN)
    config_id = request.POST.get("judge_config", "")
    config = JudgeConfig.objects.filter(project=project, pk=config_id).first() if config_id.isdigit() else None
    if config is None:
        messages.error(request, no_judge)
        return redirect("judge_home", project_id=project.pk)
    try:
        job = start(project=project, user=request.user, config=config,
                    template_id=request.POST.get("template") or None, **options)
    except ValidationError as exc:
        messages.error(request, " ".join(exc.messages))
    else:
        messages.success(request, started.format(job=job.pk, count=len(job.lm_labelling.comparison_ids),
                                                 judge=config.name))
    return redirect("judge_home", project_id=project.pk)


@login_required
@require_POST
def judge_label_rankings(request: HttpRequest, project_id: int) -> HttpResponse:
    return _lm_labelling_start(
        request, project_id, runs.lm_rankings_label, grade_rubric=request.POST.get("grade_rubric") == "on",
        no_judge="Choose the judge that ranks the comparisons.",
        started="Job {job} ranks {count} comparisons with '{judge}'; those it cannot rank go back to people.")


@login_required
@require_POST
def judge_prelabel_steps(request: HttpRequest, project_id: int) -> HttpResponse:
    return _lm_labelling_start(
        request, project_id, runs.lm_steps_prelabel, no_judge="Choose the judge that grades the steps.",
        started="Job {job} pre-labels {count} step items with '{judge}'; annotators see its grades as "
                "suggestions as they arrive.")


@login_required
def judge_config_new(request: HttpRequest, project_id: int) -> HttpResponse:
    project, _ = project_for_user(request.user, project_id, Capability.DESIGN)
    form = JudgeConfigForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        data = form.cleaned_data
        with service_errors_on(form):
            config = configs.judge_config_create(project=project, user=request.user, api_key=data["api_key"],
                                                  **{f: data[f] for f in CONFIG_FIELDS})
            messages.success(request, f"Judge '{config.name}' saved. Test its connection below.")
            return redirect("judge_config_edit", project_id=project.pk, config_id=config.pk)
    return render(request, "judging/config_form.html", {"project": project, "form": form, "config": None},
                  status=422 if form.errors else 200)


@login_required
def judge_config_edit(request: HttpRequest, project_id: int, config_id: int) -> HttpResponse:
    project, membership = project_for_user(request.user, project_id, Capability.VIEW_DASHBOARDS)
    config = get_object_or_404(JudgeConfig, project=project, pk=config_id)
    if request.method == "POST":
        project_for_user(request.user, project_id, Capability.DESIGN)
        form = JudgeConfigForm(request.POST)
        if form.is_valid():
            data = form.cleaned_data
            with service_errors_on(form):
                configs.judge_config_update(config=config, api_key=data["api_key"],
                                             clear_api_key=data["clear_api_key"],
                                             **{f: data[f] for f in CONFIG_FIELDS})
                messages.success(request, f"Judge '{config.name}' saved.")
                return redirect("judge_config_edit", project_id=project.pk, config_id=config.pk)
    else:
        form = JudgeConfigForm(initial={f: getattr(config, f) for f in CONFIG_FIELDS})
    return render(request, "judging/config_form.html", {
        "project": project, "form": form, "config": config,
        "can_design": role_allows(membership.role, Capability.DESIGN)}, status=422 if form.errors else 200)


@login_required
@require_POST
def judge_config_delete(request: HttpRequest, project_id: int, config_id: int) -> HttpResponse:
    project, _ = project_for_user(request.user, project_id, Capability.DESIGN)
    name = configs.judge_config_delete(config=get_object_or_404(JudgeConfig, project=project, pk=config_id))
    messages.success(request, f"Judge '{name}' and its stored key were removed; its labels stay.")
    return redirect("judge_home", project_id=project.pk)


@login_required
@require_POST
def template_delete(request: HttpRequest, project_id: int, name: str) -> HttpResponse:
    project, _ = project_for_user(request.user, project_id, Capability.DESIGN)
    count = prompt_templates.template_delete(project=project, name=name)
    if not count:
        raise Http404("No such template")
    messages.success(request, f"Template '{name}' ({count} version{'s' if count != 1 else ''}) was removed.")
    return redirect("judge_home", project_id=project.pk)


@login_required
@require_POST
def judge_config_test(request: HttpRequest, project_id: int, config_id: int) -> HttpResponse:
    project, _ = project_for_user(request.user, project_id, Capability.DESIGN)
    config = get_object_or_404(JudgeConfig, project=project, pk=config_id)
    try:
        result = configs.judge_config_test(config=config)
    except ValidationError as exc:
        result = {"ok": False, "message": " ".join(exc.messages), "reply": None}
    return render(request, "judging/config_form.html#test-result", {"result": result})


@login_required
def template_edit(request: HttpRequest, project_id: int, name: str | None = None) -> HttpResponse:
    project, membership = project_for_user(request.user, project_id, Capability.VIEW_DASHBOARDS)
    versions = list(selectors.template_versions(project=project, name=name)) if name else []
    if name and not versions:
        raise Http404("No such template")
    shown = versions[0] if versions else None
    if request.GET.get("version", "").isdigit():
        shown = next((v for v in versions if v.version == int(request.GET["version"])), shown)
    if request.method == "POST":
        project_for_user(request.user, project_id, Capability.DESIGN)
        form = TemplateForm(request.POST)
        if form.is_valid():
            with service_errors_on(form):
                template = prompt_templates.template_save(project=project, user=request.user, **form.cleaned_data)
                messages.success(request, f"Saved {template}.")
                return redirect("judge_template_edit", project_id=project.pk, name=template.name)
    else:
        from rlcore.judges.prompts import DEFAULT_COMPARE

        form = TemplateForm(initial={"name": shown.name, "mode": shown.mode, "text": shown.text} if shown else
                            {"name": "my-compare", "mode": "compare", "text": DEFAULT_COMPARE.text})
    return render(request, "judging/template_form.html", {
        "project": project, "form": form, "versions": versions, "shown": shown, "name": name,
        "can_design": role_allows(membership.role, Capability.DESIGN)}, status=422 if form.errors else 200)
