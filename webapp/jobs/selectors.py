from django.db.models import QuerySet

from django.utils import timezone

from webapp.jobs.models import Job, JobSample, MetricPoint


def job_list(*, project, kind: str | None = None) -> QuerySet[Job]:
    jobs = Job.objects.filter(project=project).select_related("created_by")
    return jobs.filter(kind=kind) if kind else jobs


def job_get(*, project, job_id: int) -> Job:
    return Job.objects.get(project=project, pk=job_id)


def metric_points(*, job: Job, after_id: int = 0) -> QuerySet[MetricPoint]:
    return MetricPoint.objects.filter(job=job, pk__gt=after_id).order_by("pk")


def recent_samples(*, job: Job, limit: int = 20) -> list:
    """The latest sample completions, each with its rewards as (name, value) pairs for display."""
    samples = list(JobSample.objects.filter(job=job).order_by("-pk")[:limit])
    for sample in samples:
        rewards = sample.data.get("rewards") or {}
        sample.rewards = sorted(rewards.items()) if isinstance(rewards, dict) else []
    return samples


def job_eta(*, job: Job) -> str:
    """Time left at the pace so far, as text; empty when unknown."""
    if job.state != "running" or not job.started_at or not job.progress_total or job.progress_step <= 0:
        return ""
    elapsed = (timezone.now() - job.started_at).total_seconds()
    left = elapsed / job.progress_step * max(job.progress_total - job.progress_step, 0)
    minutes, seconds = divmod(int(left), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes} min" if hours else f"{minutes} min {seconds} s" if minutes else f"{seconds} s"
