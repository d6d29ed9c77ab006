from django.conf import settings
from django.db import models


class DatasetStatus(models.TextChoices):
    IMPORTING = "importing", "Importing"
    READY = "ready", "Ready"
    FAILED = "failed", "Failed"


class SourceFormat(models.TextChoices):
    JSONL = "jsonl", "JSON Lines"
    CSV = "csv", "CSV"
    PARQUET = "parquet", "Parquet"
    HF = "hf", "Hugging Face datasets (save_to_disk folder)"


class ImportMode(models.TextChoices):
    STRICT = "strict", "Strict: any bad row fails the whole import"
    SKIP = "skip", "Skip bad rows (each is reported)"


class PreferenceLabels(models.TextChoices):
    """What a plain TRL preference row's chosen/rejected becomes (rows we exported carry their own labels)."""

    NONE = "none", "Keep chosen/rejected as response metadata (label them here)"
    HUMAN = "human", "Import each row's preference as a human label"
    LM = "lm", "Import each row's preference as an LM label"


class Dataset(models.Model):
    """Prompts (and optionally responses) imported from one file. Rows of a dataset that is not
    `ready` are a staging area: selectors hide them and a failed import deletes them."""

    project = models.ForeignKey("projects.Project", on_delete=models.CASCADE, related_name="datasets")
    name = models.CharField(max_length=200)
    source_format = models.CharField(max_length=16, choices=SourceFormat.choices)
    source_name = models.CharField(max_length=300, blank=True, help_text="The uploaded file's name.")
    mode = models.CharField(max_length=8, choices=ImportMode.choices, default=ImportMode.STRICT)
    preference_labels = models.CharField(max_length=8, choices=PreferenceLabels.choices,
                                         default=PreferenceLabels.NONE)
    # The rule each response is split into steps by on import (rlcore.steps.StepSplit as JSON); null: not
    # split on import (a TRL stepwise file brings its own steps; a split can also be made later).
    step_rule = models.JSONField(null=True, blank=True)
    status = models.CharField(max_length=16, choices=DatasetStatus.choices, default=DatasetStatus.IMPORTING,
                              db_index=True)
    row_count = models.IntegerField(default=0, help_text="Rows imported (prompts).")
    response_count = models.IntegerField(default=0)
    label_count = models.IntegerField(default=0, help_text="Preference labels imported with the rows.")
    skipped_count = models.IntegerField(default=0)
    metadata_columns = models.JSONField(default=list, blank=True)
    # Progress of a running import: bytes read of the source file (0 when unknown).
    bytes_read = models.BigIntegerField(default=0)
    bytes_total = models.BigIntegerField(default=0)
    # Bad rows: [{"line": int, "message": str}], the first few hundred.
    row_errors = models.JSONField(default=list, blank=True)
    error = models.TextField(blank=True)
    upload_path = models.CharField(max_length=500, blank=True)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    # Versions: a generation job's responses enter the project as a new dataset whose parent is the prompt set.
    parent = models.ForeignKey("self", on_delete=models.PROTECT, null=True, blank=True, related_name="versions",
                               help_text="The dataset this version was made from (its prompt set).")
    version = models.PositiveIntegerField(default=1, help_text="1 for an import; parent's versions count up.")
    job = models.ForeignKey("jobs.Job", on_delete=models.SET_NULL, null=True, blank=True, related_name="+",
                            help_text="The generation job that wrote this version.")
    partial = models.BooleanField(default=False, help_text="The job stopped early: only some responses exist.")
    generation = models.JSONField(default=dict, blank=True,
                                  help_text="The GenerationSpec settings (sampling, policies) it was made with.")

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return self.name if self.version == 1 else f"{self.name} (v{self.version})"

    @property
    def progress_percent(self) -> int:
        if self.status == DatasetStatus.READY:
            return 100
        return int(100 * self.bytes_read / self.bytes_total) if self.bytes_total else 0


class Prompt(models.Model):
    dataset = models.ForeignKey(Dataset, on_delete=models.CASCADE, related_name="prompts")
    source_line = models.IntegerField(help_text="Line (JSONL/CSV) or row number (Parquet/HF) in the source, from 1.")
    text = models.TextField(help_text="Plain-text rendering (the chat, for chat prompts).")
    messages = models.JSONField(null=True, blank=True, help_text="Chat form: [{role, content}], or null.")
    metadata = models.JSONField(default=dict, blank=True)

    class Meta:
        ordering = ["dataset_id", "source_line", "id"]

    def __str__(self) -> str:
        return self.text[:60]


class Response(models.Model):
    prompt = models.ForeignKey(Prompt, on_delete=models.CASCADE, related_name="responses")
    text = models.TextField()
    messages = models.JSONField(null=True, blank=True, help_text="Chat form of the completion, or null.")
    model_name = models.CharField(max_length=200, blank=True)
    metadata = models.JSONField(default=dict, blank=True)
    # Provenance of a generated response (all empty for imported ones).
    policy = models.ForeignKey("training.Policy", on_delete=models.PROTECT, null=True, blank=True,
                               related_name="responses")
    checkpoint_step = models.IntegerField(null=True, blank=True, help_text="The policy's training step, if known.")
    round = models.IntegerField(null=True, blank=True, help_text="Design-loop round that generated it.")
    sample_index = models.IntegerField(null=True, blank=True, help_text="Which of the samples for this prompt.")
    sampling = models.JSONField(default=dict, blank=True,
                                help_text="temperature, top_p, max_new_tokens, seed it was sampled with.")
    generation_key = models.CharField(max_length=64, blank=True,
                                      help_text="Hash of policy + sampling settings: a re-run never duplicates.")
    generated_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["prompt_id", "id"]
        constraints = [models.UniqueConstraint(
            fields=["prompt", "generation_key", "sample_index"], condition=~models.Q(generation_key=""),
            name="response_generated_once")]

    def __str__(self) -> str:
        return self.text[:60]


class StepSplitSource(models.TextChoices):
    RULE = "rule", "Split by a rule (separator or pattern)"
    FILE = "file", "Steps given as a list in the imported file"


class StepSplit(models.Model):
    """One version of a response's split into steps. The response's text is never changed: each step is
    a character span of it, so a new split (another rule) is a new version beside the old ones, and labels
    keep pointing at the version they were made on."""

    response = models.ForeignKey(Response, on_delete=models.CASCADE, related_name="step_splits")
    version = models.PositiveIntegerField(help_text="1, 2, ... per response; the highest is current.")
    source = models.CharField(max_length=8, choices=StepSplitSource.choices, default=StepSplitSource.RULE)
    # rlcore.steps.StepSplit as JSON (kind, separator/pattern); {} for steps given in the file.
    rule = models.JSONField(default=dict, blank=True)
    # [{"text": str, "start": int, "end": int}] - spans of response.text, in order
    steps = models.JSONField()
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["response_id", "-version"]
        constraints = [models.UniqueConstraint(fields=["response", "version"], name="step_split_version_once")]

    def __str__(self) -> str:
        return f"Split v{self.version} of response {self.response_id} ({len(self.steps)} steps)"
