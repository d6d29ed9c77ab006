from django.conf import settings
from django.db import models

from rlcore.judges.openai_compat import EndpointLimits
from rlcore.judges.outcomes import OUTCOME_TEXT, OUTCOMES


class JudgeBackend(models.TextChoices):
    OPENAI = "openai", "OpenAI-compatible endpoint (vLLM, Ollama, TGI, hosted APIs)"
    LOCAL_HF = "local_hf", "Local Hugging Face model (run in the worker)"


class JudgeConfig(models.Model):
    """How to reach one LM judge. The API key is stored encrypted (webapp.endpoint_keys) or read by
    the worker from the environment variable named in `api_key_env`; it is never shown back."""

    project = models.ForeignKey("projects.Project", on_delete=models.CASCADE, related_name="judge_configs")
    name = models.CharField(max_length=100)
    backend = models.CharField(max_length=16, choices=JudgeBackend.choices, default=JudgeBackend.OPENAI)
    endpoint = models.CharField(max_length=500, blank=True, help_text="API root, e.g. http://127.0.0.1:8000/v1")
    model = models.CharField(max_length=300, help_text="Model name at the endpoint, or a local model path.")
    # rlcore's EndpointLimits: its defaults, and its limits (checked by configs._clean_config)
    max_concurrency = models.PositiveIntegerField(default=EndpointLimits.model_fields["max_concurrency"].default)
    timeout_s = models.FloatField(default=EndpointLimits.model_fields["timeout_s"].default)
    max_retries = models.PositiveIntegerField(default=EndpointLimits.model_fields["max_retries"].default)
    api_key_encrypted = models.TextField(blank=True)
    api_key_env = models.CharField(max_length=100, blank=True)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]
        constraints = [models.UniqueConstraint(fields=["project", "name"], name="judge_config_name_per_project")]

    def __str__(self) -> str:
        return f"{self.name} ({self.model})"

    def __repr__(self) -> str:  # never the key, not even encrypted
        return f"<JudgeConfig {self.pk} {self.name!r} {self.backend} {self.model!r}>"

    @property
    def has_stored_key(self) -> bool:
        return bool(self.api_key_encrypted)

    @property
    def key_source(self) -> str:
        if self.api_key_encrypted:
            return "stored (encrypted)"
        if self.api_key_env:
            return f"environment variable {self.api_key_env}"
        return "none"


class PromptMode(models.TextChoices):
    COMPARE = "compare", "Pairwise comparison"
    GRADE = "grade", "Rubric grading"
    RANK = "rank", "N-way ranking"
    # Grades each step of one response (good / neutral / bad); its grades are pre-labels annotators review.
    STEPS = "steps", "Step grading"


class JudgePromptTemplate(models.Model):
    """One saved version of a judge prompt; an edit saves a new version, old ones stay for provenance."""

    project = models.ForeignKey("projects.Project", on_delete=models.CASCADE, related_name="judge_templates")
    name = models.CharField(max_length=100)
    mode = models.CharField(max_length=8, choices=PromptMode.choices, default=PromptMode.COMPARE)
    version = models.PositiveIntegerField()
    text = models.TextField()
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name", "-version"]
        constraints = [models.UniqueConstraint(fields=["project", "name", "version"],
                                               name="judge_template_version_once")]

    def __str__(self) -> str:
        return f"{self.name}@{self.version}"


class LabellingMode(models.TextChoices):
    PAIRWISE = "pairwise", "Pairwise comparisons (both orders)"
    RANKING = "ranking", "N-way rankings (as given and reversed)"
    # Pre-labels of step items (issue 13): every step graded once; StepLabels of kind lm, shown as suggestions.
    STEPS = "steps", "Step items (each step graded)"


class LMLabellingRun(models.Model):
    """A job that labels comparisons with an LM judge, and what came of it once recorded."""

    job = models.OneToOneField("jobs.Job", on_delete=models.CASCADE, related_name="lm_labelling")
    project = models.ForeignKey("projects.Project", on_delete=models.CASCADE, related_name="+")
    judge_config = models.ForeignKey(JudgeConfig, null=True, on_delete=models.SET_NULL, related_name="runs")
    template = models.ForeignKey(JudgePromptTemplate, null=True, blank=True, on_delete=models.SET_NULL,
                                 related_name="+")
    mode = models.CharField(max_length=8, choices=LabellingMode.choices, default=LabellingMode.PAIRWISE)
    rubric_version = models.ForeignKey("rubrics.RubricVersion", null=True, blank=True, on_delete=models.PROTECT,
                                       related_name="+", help_text="The judge also grades every response on it.")
    comparison_ids = models.JSONField(default=list)
    n_labelled = models.PositiveIntegerField(default=0)
    n_failed = models.PositiveIntegerField(default=0)
    finished = models.BooleanField(default=False, help_text="Every comparison has an outcome recorded.")
    bytes_read = models.BigIntegerField(default=0, help_text="How far labels.jsonl has been recorded.")
    created_at = models.DateTimeField(auto_now_add=True)


class AttemptStatus(models.TextChoices):
    LABELLED = "labelled", "Labelled"
    FAILED = "failed", "No label (reason recorded)"


class LMLabelAttempt(models.Model):
    """What the LM judge made of one comparison in one run: a label, or the reason there is none."""

    run = models.ForeignKey(LMLabellingRun, on_delete=models.CASCADE, related_name="attempts")
    comparison = models.ForeignKey("annotation.Comparison", on_delete=models.CASCADE, related_name="lm_attempts")
    status = models.CharField(max_length=10, choices=AttemptStatus.choices)
    # What the label is worth (rlcore.judges.outcomes): a label made from two disagreeing orders is a
    # tie that carries no preference, and is counted as such, not as a verdict.
    outcome = models.CharField(max_length=16, blank=True, choices=[(o, OUTCOME_TEXT[o]) for o in OUTCOMES])
    reason = models.TextField(blank=True)
    label = models.ForeignKey("annotation.PreferenceLabel", null=True, blank=True, on_delete=models.SET_NULL,
                              related_name="+")
    step_label = models.ForeignKey("annotation.StepLabel", null=True, blank=True, on_delete=models.SET_NULL,
                                   related_name="+", help_text="A steps run's pre-label.")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["id"]
        constraints = [models.UniqueConstraint(fields=["run", "comparison"], name="lm_attempt_once_per_run")]
