from django.conf import settings
from django.db import models


class JobState(models.TextChoices):
    QUEUED = "queued", "Queued"
    RUNNING = "running", "Running"
    SUCCEEDED = "succeeded", "Succeeded"
    FAILED = "failed", "Failed"
    CANCELLED = "cancelled", "Cancelled"


# The only moves a job can make; services apply them as conditional updates so that two
# processes (a worker and the reaper, say) can never both move the same job.
TRANSITIONS: dict[str, frozenset[str]] = {
    JobState.QUEUED: frozenset({JobState.RUNNING, JobState.CANCELLED, JobState.FAILED}),
    JobState.RUNNING: frozenset({JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED}),
    JobState.SUCCEEDED: frozenset(),
    JobState.FAILED: frozenset(),
    JobState.CANCELLED: frozenset(),
}
FINISHED_STATES = frozenset({JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED})


class Queue(models.TextChoices):
    DEFAULT = "default", "default (CPU: imports, LM judging)"
    GPU = "gpu", "gpu (training)"


class Job(models.Model):
    """One run of an rlcore command by a worker: training, import, judging, a self-check."""

    project = models.ForeignKey("projects.Project", on_delete=models.CASCADE, related_name="jobs")
    kind = models.CharField(max_length=40)
    title = models.CharField(max_length=200, blank=True)
    # The rlcore command line (after `python -m rlcore`), built by the webapp from validated input.
    argv = models.JSONField(default=list)
    spec = models.JSONField(default=dict, blank=True)
    queue = models.CharField(max_length=40, choices=Queue.choices, default=Queue.DEFAULT)
    state = models.CharField(max_length=16, choices=JobState.choices, default=JobState.QUEUED, db_index=True)
    cancel_requested = models.BooleanField(default=False)
    error = models.TextField(blank=True)
    log_tail = models.TextField(blank=True)
    progress_step = models.IntegerField(default=0)
    progress_total = models.IntegerField(default=0)
    worker = models.CharField(max_length=200, blank=True, help_text="Celery worker hostname running it.")
    pid = models.IntegerField(null=True, blank=True, help_text="Child process id (its process group id too).")
    output_dir = models.CharField(max_length=500, blank=True)
    parent = models.ForeignKey(
        "self", null=True, blank=True, on_delete=models.SET_NULL, related_name="children",
        help_text="The job this one resumes or was cloned from.",
    )
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    heartbeat_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        indexes = [models.Index(fields=["state", "heartbeat_at"])]

    def __str__(self) -> str:
        return f"Job {self.pk} ({self.kind}, {self.state})"

    @property
    def is_finished(self) -> bool:
        return self.state in FINISHED_STATES


class MetricPoint(models.Model):
    """One logged value; ids are increasing, so they double as SSE event ids for replay."""

    job = models.ForeignKey(Job, on_delete=models.CASCADE, related_name="metrics")
    step = models.IntegerField()
    name = models.CharField(max_length=200)
    value = models.FloatField(null=True, help_text="Null when the run logged NaN or infinity.")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        indexes = [models.Index(fields=["job", "name", "step"])]


class JobSample(models.Model):
    """A sample completion logged during training, with its per-component rewards."""

    job = models.ForeignKey(Job, on_delete=models.CASCADE, related_name="samples")
    step = models.IntegerField()
    data = models.JSONField()
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        # The samples browser filters a job's samples by step range and pages through them.
        indexes = [models.Index(fields=["job", "step"], name="jobsample_job_step")]


class JobArtifact(models.Model):
    """Something a job wrote completely (a model directory, a snapshot), announced by the child."""

    job = models.ForeignKey(Job, on_delete=models.CASCADE, related_name="artifacts")
    type = models.CharField(max_length=60)
    path = models.CharField(max_length=1000)
    data = models.JSONField(default=dict)
    created_at = models.DateTimeField(auto_now_add=True)
