"""Pages: rounds (create, win rates, head-to-head build) and over-optimisation reports."""

from django.contrib.auth.decorators import login_required
from django.core.exceptions import ValidationError
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render

from webapp.projects.permissions import Capability, project_for_user
from webapp.rounds import selectors, services
from webapp.rounds.forms import OveroptScoringSettingsForm
from webapp.rounds.models import OveroptimizationReport, Round


def _int_or_none(value: str | None) -> int | None:
    return int(value) if value and value.strip().isdigit() else None


@login_required
def round_list(request: HttpRequest, project_id: int) -> HttpResponse:
    """The project's rounds and over-optimisation reports; a designer starts the next round here."""
    from webapp.datasets.models import Dataset
    from webapp.training.models import Policy

    project, membership = project_for_user(request.user, project_id, Capability.VIEW_DASHBOARDS)
    errors: dict[str, list[str]] = {}
    if request.method == "POST":
        project, _ = project_for_user(request.user, project_id, Capability.DESIGN)
        try:
            r = services.round_create(project=project, user=request.user,
                                      policy_id=_int_or_none(request.POST.get("policy_id")) or 0,
                                      reference_id=_int_or_none(request.POST.get("reference_id")),
                                      dataset_id=_int_or_none(request.POST.get("dataset_id")),
                                      notes=request.POST.get("notes", ""))
        except ValidationError as exc:
            errors = exc.message_dict
        else:
            return redirect("round_detail", project_id=project.pk, number=r.number)
    return render(request, "rounds/round_list.html", {
        "project": project, "rounds": selectors.round_list(project=project), "errors": errors,
        "policies": Policy.objects.filter(project=project, deleted_at__isnull=True).order_by("name"),
        "datasets": Dataset.objects.filter(project=project, status="ready").order_by("name", "version"),
        "reports": selectors.overopt_report_list(project=project)[:50]}, status=422 if errors else 200)


@login_required
def round_detail(request: HttpRequest, project_id: int, number: int) -> HttpResponse:
    """Win rates of the round's policy against its reference; a designer builds the head-to-head pairs."""
    project, _ = project_for_user(request.user, project_id, Capability.VIEW_DASHBOARDS)
    r = get_object_or_404(Round.objects.select_related("policy", "reference", "dataset"), project=project, number=number)
    errors: dict[str, list[str]] = {}
    created = None
    if request.method == "POST":
        project_for_user(request.user, project_id, Capability.DESIGN)
        try:
            created = services.round_build_comparisons(
                round=r, pairs_per_prompt=_int_or_none(request.POST.get("pairs_per_prompt")) or 1,
                overlap=_int_or_none(request.POST.get("overlap")) or 1)
        except ValidationError as exc:
            errors = exc.message_dict
    return render(request, "rounds/round_detail.html", {
        "project": project, "round": r, "rates": selectors.round_win_rates(round=r), "errors": errors,
        "created": created, "reports": r.overopt_reports.all()}, status=422 if errors else 200)


@login_required
def overopt_detail(request: HttpRequest, project_id: int, report_id: int) -> HttpResponse:
    """Proxy and gold against sqrt(KL), the flagged peak, the symptoms, and the largest proxy - gold gaps."""
    project, _ = project_for_user(request.user, project_id, Capability.VIEW_DASHBOARDS)
    report = get_object_or_404(OveroptimizationReport.objects.select_related("run", "round"), project=project,
                               pk=report_id)
    r, human_gold = selectors.overopt_report_view(report=report)  # on read: peak and gaps move as labels arrive
    checkpoints = [{**c, "human": human_gold.get(c["checkpoint"])} for c in r["checkpoints"]]
    return render(request, "rounds/overopt_detail.html", {
        "project": project, "report": report, "r": r, "checkpoints": checkpoints,
        "human_gold": human_gold, "chart": selectors.overopt_chart(report=r, human_gold=human_gold),
        "loop": selectors.run_loop_links(job=report.run) if report.run else {}})



@login_required
def run_overopt(request: HttpRequest, project_id: int, run_id: int) -> HttpResponse:
    """A GRPO run's over-optimisation: its reports, and the form that scores chosen checkpoints in a job."""
    from webapp.datasets.models import Dataset
    from webapp.jobs.models import Job
    from webapp.judging.models import JudgeConfig
    from webapp.rubrics.models import RewardSpecVersion
    from webapp.jobs.kinds import GRPO_KIND
    from webapp.training.services import run_checkpoints

    project, _ = project_for_user(request.user, project_id, Capability.VIEW_DASHBOARDS)
    run = get_object_or_404(Job, project=project, pk=run_id, kind=GRPO_KIND)
    errors: dict[str, list[str]] = {}
    settings_form = OveroptScoringSettingsForm(request.POST or None)
    if request.method == "POST":
        project_for_user(request.user, project_id, Capability.DESIGN)
    if request.method == "POST" and settings_form.is_valid():
        try:
            job = services.overopt_scoring_job_create(
                project=project, user=request.user, run_id=run.pk,
                steps=[int(s) for s in request.POST.getlist("steps") if s.isdigit()],
                dataset_id=_int_or_none(request.POST.get("dataset_id")) or 0,
                gold_kind=request.POST.get("gold_kind", ""), name=request.POST.get("name", ""),
                gold_spec_version_id=_int_or_none(request.POST.get("gold_spec_version_id")),
                gold_judge_id=_int_or_none(request.POST.get("gold_judge_id")),
                round_id=_int_or_none(request.POST.get("round_id")), settings=settings_form.cleaned_data["settings"])
        except ValidationError as exc:
            errors = exc.message_dict
        else:
            return redirect("job_detail", project_id=project.pk, job_id=job.pk)
    from webapp.rounds.models import GoldKind

    return render(request, "rounds/run_overopt.html", {
        "project": project, "run": run, "errors": errors, "posted": request.POST, "settings_form": settings_form,
        "checkpoints": [step for step, _ in run_checkpoints(run)], "gold_kinds": GoldKind.choices,
        "datasets": Dataset.objects.filter(project=project, status="ready").order_by("name", "version"),
        "spec_versions": RewardSpecVersion.objects.filter(spec__project=project).select_related("spec")
        .order_by("spec__name", "-number"),
        "judges": JudgeConfig.objects.filter(project=project), "rounds": selectors.round_list(project=project),
        "reports": selectors.overopt_report_list(project=project).filter(run=run)}, status=422 if errors or settings_form.errors else 200)
