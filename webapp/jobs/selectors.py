from django.db.models import QuerySet

from webapp.jobs.models import Job, MetricPoint


def job_list(*, project, kind: str | None = None) -> QuerySet[Job]:
    jobs = Job.objects.filter(project=project).select_related("created_by")
    return jobs.filter(kind=kind) if kind else jobs


def job_get(*, project, job_id: int) -> Job:
    return Job.objects.get(project=project, pk=job_id)


def metric_points(*, job: Job, after_id: int = 0) -> QuerySet[MetricPoint]:
    return MetricPoint.objects.filter(job=job, pk__gt=after_id).order_by("pk")
