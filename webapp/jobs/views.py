from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_POST

from webapp.jobs import selectors, services
from webapp.jobs.forms import SelfcheckForm
from webapp.jobs.kinds import selfcheck_argv
from webapp.jobs.models import Job
from webapp.projects.permissions import Capability, project_for_user, role_allows


@login_required
def job_list(request: HttpRequest, project_id: int) -> HttpResponse:
    project, membership = project_for_user(request.user, project_id, Capability.VIEW_DASHBOARDS)
    can_launch = role_allows(membership.role, Capability.DESIGN)
    form = SelfcheckForm(request.POST or None)
    if request.method == "POST":
        project_for_user(request.user, project_id, Capability.DESIGN)
        if form.is_valid():
            data = form.cleaned_data
            job = services.job_create(
                project=project, user=request.user, kind="selfcheck", queue=data["queue"],
                argv=selfcheck_argv(steps=data["steps"], interval=data["interval"], fail_at=data["fail_at"]),
                spec={k: v for k, v in data.items()}, title=f"selfcheck ({data['steps']} steps)",
            )
            messages.success(request, f"Job {job.pk} queued.")
            return redirect("job_detail", project_id=project.pk, job_id=job.pk)
    jobs = selectors.job_list(project=project)[:200]
    template = "jobs/job_list.html#job-rows" if request.htmx and request.method == "GET" else "jobs/job_list.html"
    return render(request, template, {"project": project, "jobs": jobs, "form": form, "can_launch": can_launch},
                  status=422 if form.errors else 200)


@login_required
def job_detail(request: HttpRequest, project_id: int, job_id: int) -> HttpResponse:
    project, membership = project_for_user(request.user, project_id, Capability.VIEW_DASHBOARDS)
    job = get_object_or_404(Job, project=project, pk=job_id)
    context = {
        "project": project, "job": job, "can_cancel": role_allows(membership.role, Capability.DESIGN),
        "latest_metrics": _latest_metrics(job),
    }
    template = "jobs/job_detail.html#job-status" if request.htmx else "jobs/job_detail.html"
    return render(request, template, context)


def _latest_metrics(job: Job) -> list[tuple[str, int, float | None]]:
    latest: dict[str, tuple[int, float | None]] = {}
    for point in selectors.metric_points(job=job).only("name", "step", "value"):
        latest[point.name] = (point.step, point.value)
    return sorted((name, step, value) for name, (step, value) in latest.items())


@login_required
@require_POST
def job_cancel(request: HttpRequest, project_id: int, job_id: int) -> HttpResponse:
    project, _ = project_for_user(request.user, project_id, Capability.DESIGN)
    job = services.job_request_cancel(job=get_object_or_404(Job, project=project, pk=job_id))
    messages.info(request, "Cancelled." if job.is_finished else "Cancel requested; the worker is stopping the job.")
    return redirect("job_detail", project_id=project.pk, job_id=job.pk)
