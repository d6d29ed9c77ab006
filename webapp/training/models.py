from django.conf import settings
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


class ProcessRewardModel(models.Model):
    """A trained process reward model (PRM) in the registry: a token classifier scoring each step at its separator.

    A sibling of RewardModel rather than a ``kind`` on it: a PRM scores steps, not pairs, so the reward-model
    places (ensembles, label audit, stored scores, the composer's ``reward_model`` choices) must never pick one
    up by accident, and its metrics are per step and first error rather than pairwise accuracy. Rows are created
    only after the training job succeeded, from the ``process_reward_model`` artifact rlcore announced once the
    model directory was fully written.
    """

    project = models.ForeignKey("projects.Project", on_delete=models.CASCADE, related_name="process_reward_models")
    job = models.ForeignKey("jobs.Job", on_delete=models.PROTECT, related_name="process_reward_models")
    name = models.CharField(max_length=200)
    path = models.CharField(max_length=1000, help_text="Model directory: AutoModelForTokenClassification loads it.")
    backbone = models.CharField(max_length=500)
    step_separator = models.CharField(max_length=100, help_text="Text after each step; the score sits on it.")
    snapshot_path = models.CharField(max_length=1000, help_text="The frozen stepwise labels it was trained on.")
    spec = models.JSONField(help_text="The PRMTrainSpec it was trained with.")
    metrics = models.JSONField(default=dict, help_text=(
        "Held-out step_accuracy (n_steps, interval) and first_error_accuracy (n_responses, interval); data: rows "
        "in, train / held out, dropped by reason, the split."))
    created_at = models.DateTimeField(auto_now_add=True)
    deleted_at = models.DateTimeField(null=True, blank=True, help_text="Deleted models stay for provenance.")

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [models.UniqueConstraint(fields=["job", "path"], name="prm_unique_path_per_job")]

    def __str__(self) -> str:
        return self.name


class PolicySource(models.TextChoices):
    GRPO_RUN = "grpo_run", "GRPO run (its final policy)"
    CHECKPOINT = "checkpoint", "Checkpoint of a run"
    FOLDER = "folder", "Local model folder"
    HUB = "hub", "Hugging Face hub id"
    ENDPOINT = "endpoint", "OpenAI-compatible endpoint"
    DEMO = "demo", "Demo policy (seed_demo)"


class Policy(models.Model):
    """A policy in the registry, beside reward models: something that can answer prompts.

    ``location`` is what loads it: a model folder (grpo_run, checkpoint, folder, demo), a hub id (hub),
    or the model name at ``endpoint_url`` (endpoint). Run-made entries keep the run (``job``), the
    checkpoint ``step``, the reward spec version and the prompt snapshot it was trained on, and the
    run's final metrics. Endpoint keys are handled like judges' keys: stored encrypted
    (webapp.endpoint_keys) or read by the worker from an operator-allowed environment variable.
    Rows are only created whole (services.policy_register* are atomic); deleted ones stay for provenance.
    """

    project = models.ForeignKey("projects.Project", on_delete=models.CASCADE, related_name="policies")
    name = models.CharField(max_length=200)
    source = models.CharField(max_length=16, choices=PolicySource.choices)
    location = models.CharField(max_length=1000, help_text="Model folder, hub id, or model name at the endpoint.")
    endpoint_url = models.CharField(max_length=500, blank=True, help_text="API root, e.g. http://127.0.0.1:8000/v1")
    api_key_encrypted = models.TextField(blank=True)
    api_key_env = models.CharField(max_length=100, blank=True)
    job = models.ForeignKey("jobs.Job", on_delete=models.PROTECT, null=True, blank=True, related_name="policies",
                            help_text="The GRPO run that produced it (grpo_run, checkpoint).")
    step = models.IntegerField(null=True, blank=True, help_text="Training step of the checkpoint / final policy.")
    reward_spec_version = models.ForeignKey("rubrics.RewardSpecVersion", on_delete=models.PROTECT, null=True,
                                            blank=True, related_name="policies")
    snapshot_path = models.CharField(max_length=1000, blank=True, help_text="Prompt snapshot the run trained on.")
    metrics = models.JSONField(default=dict, blank=True, help_text="The run's metrics at this step.")
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, null=True, blank=True,
                                   related_name="+", help_text="Null for entries registered by a run or seed_demo.")
    created_at = models.DateTimeField(auto_now_add=True)
    deleted_at = models.DateTimeField(null=True, blank=True, help_text="Deleted policies stay for provenance.")

    class Meta:
        ordering = ["-created_at", "-id"]
        verbose_name_plural = "policies"
        constraints = [models.UniqueConstraint(fields=["project", "source", "endpoint_url", "location"],
                                               name="policy_unique_location_per_project")]

    def __str__(self) -> str:
        return self.name

    def __repr__(self) -> str:  # never the key, not even encrypted
        return f"<Policy {self.pk} {self.name!r} {self.source} {self.location!r}>"

    @property
    def is_endpoint(self) -> bool:
        return self.source == PolicySource.ENDPOINT

    @property
    def key_source(self) -> str:
        if self.api_key_encrypted:
            return "stored (encrypted)"
        if self.api_key_env:
            return f"environment variable {self.api_key_env}"
        return "none"
