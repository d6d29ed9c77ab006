from datetime import datetime
from typing import Any

from django.shortcuts import get_object_or_404
from ninja import Query, Router, Schema, Status
from pydantic import Field

from webapp.jobs import selectors, services
from webapp.jobs.models import Job, Queue
from webapp.projects.permissions import Capability, project_for_user

router = Router(tags=["jobs"])


class JobOut(Schema):
    id: int
    kind: str
    title: str
    state: str
    queue: str
    cancel_requested: bool
    error: str
    progress_step: int
    progress_total: int
    worker: str
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    heartbeat_at: datetime | None


class SelfcheckIn(Schema):
    steps: int = Field(5, ge=1, le=10_000)
    interval: float = Field(0.2, ge=0, le=60)
    fail_at: int | None = Field(None, ge=1)
    queue: str = Queue.DEFAULT


class MetricOut(Schema):
    id: int
    step: int
    name: str
    value: float | None


def _job_or_404(request, project_id: int, job_id: int, capability: Capability) -> Job:
    project, _ = project_for_user(request.auth, project_id, capability)
    return get_object_or_404(Job, project=project, pk=job_id)


@router.get("/{project_id}/jobs", response=list[JobOut])
def list_jobs(request, project_id: int, kind: str | None = None):
    project, _ = project_for_user(request.auth, project_id, Capability.VIEW_DASHBOARDS)
    return list(selectors.job_list(project=project, kind=kind)[:500])


@router.post("/{project_id}/jobs/selfcheck", response={201: JobOut},
             summary="Launch `python -m rlcore selfcheck` (checks the worker plumbing)")
def launch_selfcheck(request, project_id: int, body: SelfcheckIn):
    project, _ = project_for_user(request.auth, project_id, Capability.DESIGN)
    from webapp.jobs.kinds import selfcheck_argv

    job = services.job_create(
        project=project, user=request.auth, kind="selfcheck", queue=body.queue,
        argv=selfcheck_argv(steps=body.steps, interval=body.interval, fail_at=body.fail_at),
        spec=body.dict(), title=f"selfcheck ({body.steps} steps)",
    )
    return Status(201, job)


@router.get("/{project_id}/jobs/{job_id}", response=JobOut)
def get_job(request, project_id: int, job_id: int):
    return _job_or_404(request, project_id, job_id, Capability.VIEW_DASHBOARDS)


@router.post("/{project_id}/jobs/{job_id}/cancel", response=JobOut)
def cancel_job(request, project_id: int, job_id: int):
    job = _job_or_404(request, project_id, job_id, Capability.DESIGN)
    return services.job_request_cancel(job=job)


@router.get("/{project_id}/jobs/{job_id}/metrics", response=list[MetricOut])
def list_metrics(request, project_id: int, job_id: int, after_id: int = 0):
    job = _job_or_404(request, project_id, job_id, Capability.VIEW_DASHBOARDS)
    return list(selectors.metric_points(job=job, after_id=after_id)[:10_000])


class SampleOut(Schema):
    id: int
    step: int
    prompt: Any = Field(description="The prompt as the trainer saw it (text, after the chat template).")
    completion: Any
    length: int = Field(description="Characters of the completion.")
    reward: float | None = Field(description="Total reward: the weighted sum of the components that have a value.")
    advantage: float | None
    rewards: dict[str, float | None] = Field(description="Each component's reward; null when non-finite.")


class SamplePageOut(Schema):
    total: int = Field(description="Samples the job logged.")
    matched: int = Field(description="Of them, those the filters kept.")
    without_value: int = Field(description="Of the matched, those without the sort value (listed last).")
    components: list[str]
    page: int
    pages: int
    page_size: int
    samples: list[SampleOut]


@router.get("/{project_id}/jobs/{job_id}/samples", response=SamplePageOut,
            summary="A job's sample completions, filtered, sorted and paginated (the job page's samples browser)")
def list_samples(request, project_id: int, job_id: int, query: Query[selectors.SampleQuery]):
    job = _job_or_404(request, project_id, job_id, Capability.VIEW_DASHBOARDS)
    found = selectors.sample_page(job=job, query=query)
    return SamplePageOut(
        total=found.total, matched=found.matched, without_value=found.without_value, components=found.components,
        page=found.page.number, pages=found.page.paginator.num_pages, page_size=query.page_size,
        samples=[SampleOut(id=s.pk, step=s.step, prompt=s.data.get("prompt"), completion=s.data.get("completion"),
                           length=s.length, reward=s.data.get("reward"), advantage=s.data.get("advantage"),
                           rewards=dict(s.rewards)) for s in found.page.object_list])
