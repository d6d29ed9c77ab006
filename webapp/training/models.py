from django.db import models


class RewardModel(models.Model):
    """A trained reward model in the registry: a complete Hugging Face model directory.

    Rows are created only after the training job succeeded, from artifacts the trainer announced
    once each model directory was fully written; a crashed or cancelled run registers nothing.
    """

    project = models.ForeignKey("projects.Project", on_delete=models.CASCADE, related_name="reward_models")
    job = models.ForeignKey("jobs.Job", on_delete=models.PROTECT, related_name="reward_models")
    name = models.CharField(max_length=200)
    path = models.CharField(max_length=1000, help_text="Model directory, loadable by transformers and TRL.")
    backbone = models.CharField(max_length=500)
    member = models.IntegerField(null=True, blank=True, help_text="Ensemble member index, if part of an ensemble.")
    snapshot_path = models.CharField(max_length=1000, help_text="The frozen preference data it was trained on.")
    spec = models.JSONField(help_text="The RewardModelTrainSpec it was trained with.")
    metrics = models.JSONField(default=dict, help_text="Held-out accuracy, margin, calibration.")
    created_at = models.DateTimeField(auto_now_add=True)
    deleted_at = models.DateTimeField(null=True, blank=True, help_text="Deleted models stay for provenance.")

    class Meta:
        ordering = ["-created_at"]
        constraints = [models.UniqueConstraint(fields=["job", "path"], name="reward_model_unique_path_per_job")]

    def __str__(self) -> str:
        return self.name
