from django.conf import settings
from django.db import models


class SourceComparison(models.Model):
    """A stored comparison of reward sources on one response set (a dataset): rlcore's
    ``RewardComparison`` as computed then, and the score tables it rests on, so a drill-down later reads
    the same numbers even after a model is rescored or a rubric gets a new version."""

    project = models.ForeignKey("projects.Project", on_delete=models.CASCADE, related_name="source_comparisons")
    dataset = models.ForeignKey("datasets.Dataset", on_delete=models.CASCADE, related_name="+")
    sources = models.JSONField(help_text="[{key, name}] in matrix order; key as the API takes it (rubric:3, rm:7).")
    scores = models.JSONField(help_text="{source name: [[prompt_id, response_id, score], ...]}")
    result = models.JSONField(help_text="rlcore.analysis.starc.RewardComparison, dumped.")
    n_labelled_pairs = models.PositiveIntegerField(default=0, help_text="Human-labelled pairs given for agreement.")
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at", "-id"]
