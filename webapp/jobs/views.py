from asgiref.sync import sync_to_async
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.contrib.auth.views import redirect_to_login
from django.http import Http404, HttpRequest, HttpResponse, StreamingHttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.views.decorators.http import require_POST

from rlcore.training.runtime import has_resume_point
from webapp.jobs import selectors, services
from webapp.jobs.forms import SelfcheckForm
from webapp.jobs.kinds import selfcheck_argv
from webapp.jobs.models import Job
from webapp.jobs.streams import job_event_stream
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
    part = request.GET.get("part")
    from webapp.training.services import TRAINING_KINDS

    can_design = role_allows(membership.role, Capability.DESIGN)
    stopped_training = job.kind in TRAINING_KINDS and job.state in ("failed", "cancelled")
    # Resume continues from a checkpoint; a run that died before its first one can only be launched again.
    resumable = stopped_training and has_resume_point(job.output_dir)
    context = {"project": project, "job": job, "can_cancel": can_design, "can_resume": can_design and resumable,
               "can_relaunch": can_design and stopped_training and not resumable,
               "relaunch_url": _relaunch_url(project, job)}
    if part in (None, "status"):
        context.update(latest_metrics=_latest_metrics(job), eta=selectors.job_eta(job=job))
    if part in (None, "samples"):
        context["samples"] = selectors.recent_samples(job=job)
    if part in ("status", "samples"):
        return render(request, f"jobs/job_detail.html#job-{part}", context)
    context["dashboard_jobs"] = [_dashboard_entry(project, job)]
    return render(request, "jobs/job_detail.html", context)


def _relaunch_url(project, job: Job) -> str:
    from webapp.training.services import GRPO_KIND, REWARD_MODEL_KIND

    names = {GRPO_KIND: "grpo_launch", REWARD_MODEL_KIND: "reward_model_launch"}
    if job.kind not in names:
        return ""
    return reverse(names[job.kind], kwargs={"project_id": project.pk}) + f"?clone={job.pk}"


def _dashboard_entry(project, job: Job) -> dict:
    return {"id": job.pk, "label": f"#{job.pk} {job.title}",
            "events": reverse("job_events", kwargs={"project_id": project.pk, "job_id": job.pk})}


@login_required
def job_compare(request: HttpRequest, project_id: int) -> HttpResponse:
    """Several runs on the same charts: /projects/<p>/jobs/compare/?ids=3,5,8"""
    project, _ = project_for_user(request.user, project_id, Capability.VIEW_DASHBOARDS)
    raw_ids = ",".join(request.GET.getlist("ids")).split(",")
    ids = [int(part) for part in raw_ids if part.strip().isdigit()]
    jobs = list(Job.objects.filter(project=project, pk__in=ids).order_by("pk"))
    if len(jobs) < 2:
        messages.error(request, "Pick at least two jobs of this project to compare.")
        return redirect("job_list", project_id=project.pk)
    return render(request, "jobs/job_compare.html", {
        "project": project, "jobs": jobs,
        "dashboard_jobs": [_dashboard_entry(project, job) for job in jobs],
    })


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


def _authorize_stream(request: HttpRequest, project_id: int, job_id: int) -> bool:
    if not request.user.is_authenticated:
        return False
    project, _ = project_for_user(request.user, project_id, Capability.VIEW_DASHBOARDS)
    if not Job.objects.filter(project=project, pk=job_id).exists():
        raise Http404("No such job")
    return True


async def job_events(request: HttpRequest, project_id: int, job_id: int) -> HttpResponse:
    """The live stream a job page (or any script) subscribes to; see webapp/jobs/streams.py."""
    # Checked on the shared thread pool (not a thread per request, as login_required would do),
    # so a burst of dashboards opening at once cannot exhaust the database's connections.
    if not await sync_to_async(_authorize_stream, thread_sensitive=False)(request, project_id, job_id):
        return redirect_to_login(request.get_full_path())
    raw_last_id = request.headers.get("Last-Event-ID") or request.GET.get("last_event_id") or "0"
    last_event_id = int(raw_last_id) if raw_last_id.isdigit() else 0
    response = StreamingHttpResponse(job_event_stream(job_id, last_event_id), content_type="text/event-stream")
    response["Cache-Control"] = "no-cache"
    response["X-Accel-Buffering"] = "no"  # nginx: do not buffer the stream
    return response
