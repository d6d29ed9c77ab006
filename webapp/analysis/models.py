from django.conf import settings
from django.db import models


class ComparisonState(models.TextChoices):
    PENDING = "pending", "Scoring in worker jobs"
    READY = "ready", "Ready"
    FAILED = "failed", "Failed"


class SourceComparison(models.Model):
    """A stored comparison of reward sources on one response set (a dataset): rlcore's
    ``RewardComparison`` as computed then, and the score tables it rests on, so a drill-down later reads
    the same numbers even after a model is rescored or a rubric gets a new version."""

    project = models.ForeignKey("projects.Project", on_delete=models.CASCADE, related_name="source_comparisons")
    dataset = models.ForeignKey("datasets.Dataset", on_delete=models.CASCADE, related_name="+")
    sources = models.JSONField(help_text="[{key, name}] in matrix order; key as the API takes it (rubric:3, rm:7).")
    scores = models.JSONField(default=dict, help_text="{source name: [[prompt_id, response_id, score], ...]}")
    result = models.JSONField(null=True, blank=True,
                              help_text="rlcore.analysis.starc.RewardComparison, dumped; null while pending or failed.")
    # Above the inline cap (or when a spec needs a reward model) each rubric/spec source is scored by a
    # worker job; the comparison is computed when the last of them succeeds (services.record_source_scores).
    state = models.CharField(max_length=16, choices=ComparisonState.choices, default=ComparisonState.READY)
    error = models.TextField(blank=True, help_text="Why it failed: the source, its job and the job's error.")
    jobs = models.ManyToManyField("jobs.Job", blank=True, related_name="+",
                                  help_text="The scoring jobs it waits for, one per rubric or spec source.")
    n_labelled_pairs = models.PositiveIntegerField(default=0, help_text="Human-labelled pairs given for agreement.")
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at", "-id"]
