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

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return self.name

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

    class Meta:
        ordering = ["prompt_id", "id"]

    def __str__(self) -> str:
        return self.text[:60]
