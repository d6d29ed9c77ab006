from pathlib import Path
from urllib.parse import urlencode

from asgiref.sync import sync_to_async
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.contrib.auth.views import redirect_to_login
from django.core.exceptions import ValidationError
from django.http import Http404, HttpRequest, HttpResponse, StreamingHttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.views.decorators.http import require_POST
from pydantic import ValidationError as PydanticValidationError

from rlcore.training.runtime import has_resume_point
from webapp.jobs import selectors, services
from webapp.jobs.forms import SelfcheckForm
from webapp.jobs.kinds import GRPO_KIND, REWARD_MODEL_KIND, TRAINING_KINDS, selfcheck_argv
from webapp.jobs.models import Job
from webapp.jobs.streams import job_event_stream
from webapp.forms_util import pydantic_errors
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
    can_design = role_allows(membership.role, Capability.DESIGN)
    stopped_training = job.kind in TRAINING_KINDS and job.state in ("failed", "cancelled")
    # Resume continues from a checkpoint; a run that died before its first one can only be launched again.
    resumable = stopped_training and has_resume_point(job.output_dir)
    context = {"project": project, "job": job, "can_cancel": can_design, "can_resume": can_design and resumable,
               "can_relaunch": can_design and stopped_training and not resumable,
               "relaunch_url": _relaunch_url(project, job)}
    if part in (None, "status"):
        context.update(latest_metrics=_latest_metrics(job), eta=selectors.job_eta(job=job),
                       notes=selectors.job_notes(job=job))
    if part in (None, "samples", "sample-table"):
        context.update(_samples_context(request, job))
    if part in ("status", "samples", "sample-table"):
        return render(request, f"jobs/job_detail.html#job-{part}", context)
    context["dashboard_jobs"] = [_dashboard_entry(project, job, selectors.run_colour(job.pk))]
    return render(request, "jobs/job_detail.html", context, status=422 if context["sample_errors"] else 200)


def _samples_context(request: HttpRequest, job: Job) -> dict:
    """The samples browser: the filters as asked (to refill the form), one page of samples, or the errors.

    An htmx table refresh answers errors with 200: htmx swaps no 4xx response, and the message must show."""
    asked = {key: value.strip() for key, value in request.GET.items() if key != "part" and value.strip()}
    components = selectors.sample_components(job=job)
    values = [(key, label) for key, label in selectors.SAMPLE_VALUES.items()] + [
        (f"component:{name}", f"component {name}") for name in components]
    context = {"sample_filters": asked, "sample_errors": [], "samples": None, "sample_values": values,
               "sample_sorts": [(f"-{key}", f"{label}, high to low") for key, label in values]
               + [(key, f"{label}, low to high") for key, label in values],
               "samples_query": urlencode({k: v for k, v in asked.items() if k != "page"}),
               "logs_samples": job.kind == GRPO_KIND}
    try:
        context["samples"] = selectors.sample_page(job=job, query=selectors.SampleQuery.model_validate(asked))
    except PydanticValidationError as exc:
        context["sample_errors"] = _messages(pydantic_errors(exc.errors()))
    except ValidationError as exc:
        context["sample_errors"] = _messages(exc)
    return context


def _messages(error: ValidationError) -> list[str]:
    return [f"{field}: {message}" for field, messages in error.message_dict.items() for message in messages]


@login_required
def job_files(request: HttpRequest, project_id: int, job_id: int) -> HttpResponse:
    """The job's run directory (metrics, samples, tracker mirrors, checkpoints), listed; nothing outside it."""
    project, _ = project_for_user(request.user, project_id, Capability.VIEW_DASHBOARDS)
    job = get_object_or_404(Job, project=project, pk=job_id)
    folder = selectors.run_directory(job=job, subpath=request.GET.get("path", ""))
    if folder is None:
        raise Http404("No such folder in this job's run directory")
    parent = str(Path(folder.relative).parent) if folder.relative else None
    return render(request, "jobs/job_files.html", {"project": project, "job": job, "folder": folder,
                                                   "parent": "" if parent == "." else parent})


def _relaunch_url(project, job: Job) -> str:
    names = {GRPO_KIND: "grpo_launch", REWARD_MODEL_KIND: "reward_model_launch"}
    if job.kind not in names:
        return ""
    return reverse(names[job.kind], kwargs={"project_id": project.pk}) + f"?clone={job.pk}"


def _dashboard_entry(project, job: Job, colour: str) -> dict:
    """What static/js/job_dashboard.js needs of one run (json_script: the page runs no inline script)."""
    return {"id": job.pk, "label": f"#{job.pk} {job.title}", "kind": job.kind, "colour": colour,
            "history": reverse("job_metrics", kwargs={"project_id": project.pk, "job_id": job.pk}),
            "events": reverse("job_events", kwargs={"project_id": project.pk, "job_id": job.pk})}


async def job_metrics(request: HttpRequest, project_id: int, job_id: int) -> HttpResponse:
    """Every metric point of a job in columns by name (selectors.metric_history_json): the dashboards' first
    load, after which the SSE stream continues from ``last_id``."""
    # On the shared thread pool, not Django's one thread for sync views: a compare page asks for ten
    # histories at once, and in that one thread their queries (about 100 ms each) ran one after another.
    history = await sync_to_async(_metric_history, thread_sensitive=False)(request, project_id, job_id)
    if history is None:
        return redirect_to_login(request.get_full_path())
    return HttpResponse(history, content_type="application/json")


def _metric_history(request: HttpRequest, project_id: int, job_id: int) -> str | None:
    if not request.user.is_authenticated:
        return None
    project, _ = project_for_user(request.user, project_id, Capability.VIEW_DASHBOARDS)
    return selectors.metric_history_json(job=get_object_or_404(Job, project=project, pk=job_id))


@login_required
def job_compare(request: HttpRequest, project_id: int) -> HttpResponse:
    """Up to COMPARE_MAX_RUNS runs on the same charts, and what differs in their specs:
    /projects/<p>/jobs/compare/?ids=3,5,8 (or ids=3&ids=5; the page's own form adds ``add=<id>``)."""
    project, _ = project_for_user(request.user, project_id, Capability.VIEW_DASHBOARDS)
    raw_ids = ",".join(request.GET.getlist("ids") + request.GET.getlist("add")).split(",")
    ids = list(dict.fromkeys(int(part) for part in raw_ids if part.strip().isdigit()))
    jobs = list(Job.objects.filter(project=project, pk__in=ids).order_by("pk"))
    if len(jobs) < 2:
        messages.error(request, "Pick at least two jobs of this project to compare.")
        return redirect("job_list", project_id=project.pk)
    limit = selectors.COMPARE_MAX_RUNS
    if len(jobs) > limit:
        messages.warning(request, f"Compared the first {limit} of the {len(jobs)} runs picked (by job number): "
                                  f"more than {limit} lines on one chart cannot be told apart.")
        jobs = jobs[:limit]
    colours = selectors.run_colours([job.pk for job in jobs])
    shown = [job.pk for job in jobs]
    return render(request, "jobs/job_compare.html", {
        "project": project, "jobs": jobs, "colours": colours, "ids": ",".join(map(str, shown)),
        "runs": [{"job": job, "colour": colours[job.pk],
                  "without": ",".join(str(pk) for pk in shown if pk != job.pk)} for job in jobs],
        "differences": selectors.spec_differences(jobs=jobs),
        "can_add": len(jobs) < limit,
        "candidates": selectors.job_list(project=project).exclude(pk__in=shown)[:100],
        "dashboard_jobs": [_dashboard_entry(project, job, colours[job.pk]) for job in jobs],
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
