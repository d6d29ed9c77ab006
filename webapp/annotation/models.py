from django.conf import settings
from django.db import models


class ComparisonKind(models.TextChoices):
    PAIR = "pair", "Pair (A / B)"
    RANKING = "ranking", "N-way ranking"
    # One response's steps, each graded (the split in `step_split`; response_ids holds that one response).
    STEPS = "steps", "Step labelling"


class Comparison(models.Model):
    """Two or more responses to one prompt, to be judged side by side.

    `taken` counts the human assignments that hold or used a slot (active + done); the queue only
    changes it under the comparison's row lock, so `taken <= overlap` whatever the concurrency.
    """

    project = models.ForeignKey("projects.Project", on_delete=models.CASCADE, related_name="comparisons")
    prompt = models.ForeignKey("datasets.Prompt", on_delete=models.CASCADE, related_name="comparisons")
    kind = models.CharField(max_length=8, choices=ComparisonKind.choices, default=ComparisonKind.PAIR)
    # Canonical order of the responses: label choice "a" means response_ids[0] is preferred.
    response_ids = models.JSONField(help_text="Response ids in canonical order (a, b, ...).")
    overlap = models.PositiveIntegerField(default=1, help_text="Distinct human annotators wanted.")
    taken = models.PositiveIntegerField(default=0, help_text="Active or completed human assignments.")
    human_label_count = models.PositiveIntegerField(default=0)
    # A gold item's known answer in canonical order ("a" or "b"; never a tie); blank for a normal comparison.
    # Never shown to annotators: the item they get has the same fields whichever it is.
    gold_answer = models.CharField(max_length=1, blank=True, default="")
    is_active = models.BooleanField(default=True)
    # Step items only: the split version the steps are graded on, and the scale each step is graded on.
    step_split = models.ForeignKey("datasets.StepSplit", null=True, blank=True, on_delete=models.PROTECT,
                                   related_name="comparisons")
    step_scale = models.CharField(max_length=8, blank=True, default="")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["id"]
        indexes = [models.Index(fields=["project", "is_active", "id"]),
                   # the queue's gold claims scan only the (few) gold comparisons
                   models.Index(fields=["project", "id"], condition=~models.Q(gold_answer=""),
                                name="comparison_gold_items")]

    def __str__(self) -> str:
        return f"Comparison {self.pk}"

    @property
    def response_a_id(self) -> int:
        return self.response_ids[0]

    @property
    def response_b_id(self) -> int:
        return self.response_ids[1]

    def responses(self) -> list:
        """The Response rows in canonical order (one query)."""
        from webapp.datasets.models import Response

        by_id = Response.objects.in_bulk(self.response_ids)
        return [by_id[i] for i in self.response_ids if i in by_id]


class AssignmentStatus(models.TextChoices):
    ACTIVE = "active", "Active"
    DONE = "done", "Labelled"
    SKIPPED = "skipped", "Skipped"
    EXPIRED = "expired", "Expired (returned to the pool)"


class Assignment(models.Model):
    """A comparison handed to one annotator; at most one per (comparison, annotator), ever."""

    comparison = models.ForeignKey(Comparison, on_delete=models.CASCADE, related_name="assignments")
    annotator = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="assignments")
    project = models.ForeignKey("projects.Project", on_delete=models.CASCADE, related_name="+")
    status = models.CharField(max_length=8, choices=AssignmentStatus.choices, default=AssignmentStatus.ACTIVE)
    # Response ids in the order this annotator sees them (randomised per annotator).
    display_order = models.JSONField()
    assigned_at = models.DateTimeField()
    expires_at = models.DateTimeField()
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["comparison", "annotator"], name="assignment_once_per_annotator"),
        ]
        indexes = [
            models.Index(fields=["project", "annotator", "status"]),
            models.Index(fields=["project", "status", "expires_at"]),
        ]

    def __str__(self) -> str:
        return f"{self.comparison} to {self.annotator} ({self.status})"


class LabelSource(models.TextChoices):
    HUMAN = "human", "Human"
    LM = "lm", "Language-model judge"
    # A disagreement's resolution, recorded by a designer on the adjudication page: not a rater of its own,
    # so agreement statistics leave it out; exports carry it, marked.
    ADJUDICATION = "adjudication", "Adjudication"


class Choice(models.TextChoices):
    A = "a", "A (first canonical response) preferred"
    B = "b", "B (second canonical response) preferred"
    TIE = "tie", "Tie"
    RANKING = "ranking", "Ranking (see `ranking`)"


class PreferenceLabel(models.Model):
    """One judgement of a comparison, by a person (`annotator`) or by an LM judge (`annotator` null).

    `choice` refers to the comparison's canonical order, never to the order shown; what was shown
    is in `display_order`. `strength` is 0 for a tie, 1 (slightly) or 2 (much) better otherwise.
    """

    comparison = models.ForeignKey(Comparison, on_delete=models.CASCADE, related_name="labels")
    assignment = models.OneToOneField(Assignment, null=True, blank=True, on_delete=models.SET_NULL,
                                      related_name="label")
    source = models.CharField(max_length=12, choices=LabelSource.choices, default=LabelSource.HUMAN)
    annotator = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL,
                                  related_name="preference_labels")
    choice = models.CharField(max_length=8, choices=Choice.choices)
    ranking = models.JSONField(null=True, blank=True, help_text="Response ids best first (N-way).")
    strength = models.PositiveSmallIntegerField(default=1)
    criterion_scores = models.JSONField(default=dict, blank=True,
                                        help_text='{"response id": {"criterion": score}}')
    rationale = models.TextField(blank=True)
    display_order = models.JSONField(default=list, blank=True)
    model_version = models.CharField(max_length=200, blank=True,
                                     help_text="Judge model (LM labels), or the labelling tool version.")
    rubric_version = models.ForeignKey("rubrics.RubricVersion", null=True, blank=True,
                                       on_delete=models.PROTECT, related_name="+")
    # LM judge provenance: rendered prompt, raw reply, both-order verdicts, confidence. Import
    # provenance (original annotator, file line) for imported labels.
    provenance = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["id"]
        indexes = [models.Index(fields=["comparison", "source"])]
        constraints = [
            models.UniqueConstraint(fields=["comparison", "annotator"], condition=models.Q(source="human"),
                                    name="one_human_label_per_annotator"),
        ]

    def __str__(self) -> str:
        return f"{self.source} label {self.choice} on {self.comparison_id}"


class StepScale(models.TextChoices):
    TERNARY = "ternary", "good (1) / neutral (0) / bad (-1)"
    SCORE5 = "score5", "a 1-5 score (1 worst)"


STEP_SCALE_VALUES = {StepScale.TERNARY: (-1, 0, 1), StepScale.SCORE5: (1, 2, 3, 4, 5)}


class StepLabelSource(models.TextChoices):
    HUMAN = "human", "Human"
    LM = "lm", "Language-model judge (a pre-label)"
    # A person's grades given with an LM's pre-label shown as a suggestion (confirmed or corrected): a kind
    # of its own, because what was shown may lean the person towards it; `suggestion` is the LM label shown.
    REVIEWED = "reviewed", "Human, from an LM suggestion"


class StepLabel(models.Model):
    """The grades of every step of one step item, by a person or an LM judge.

    `grades[i]` is step i's grade on the item's scale (ternary: -1 bad, 0 neutral, 1 good; score5: 1-5);
    `first_error` is the index of the first wrong step (null: none is wrong). Steps are those of
    `step_split` (the version shown), so a later split never re-points an old label.
    """

    comparison = models.ForeignKey(Comparison, on_delete=models.CASCADE, related_name="step_labels")
    assignment = models.OneToOneField(Assignment, null=True, blank=True, on_delete=models.SET_NULL,
                                      related_name="step_label")
    step_split = models.ForeignKey("datasets.StepSplit", on_delete=models.PROTECT, related_name="labels")
    source = models.CharField(max_length=8, choices=StepLabelSource.choices, default=StepLabelSource.HUMAN)
    annotator = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL,
                                  related_name="step_labels")
    scale = models.CharField(max_length=8, choices=StepScale.choices)
    grades = models.JSONField()
    first_error = models.IntegerField(null=True, blank=True)
    note = models.TextField(blank=True)
    suggestion = models.ForeignKey("self", null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    changed_steps = models.IntegerField(null=True, blank=True,
                                        help_text="Reviewed labels: steps whose grade differs from the suggestion.")
    model_version = models.CharField(max_length=200, blank=True)
    judge_template = models.ForeignKey("judging.JudgePromptTemplate", null=True, blank=True,
                                               on_delete=models.SET_NULL, related_name="+")
    provenance = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["id"]
        indexes = [models.Index(fields=["comparison", "source"])]
        constraints = [
            models.UniqueConstraint(fields=["comparison", "annotator"], condition=~models.Q(source="lm"),
                                    name="one_human_step_label_per_annotator"),
        ]

    def __str__(self) -> str:
        return f"{self.source} step label on {self.comparison_id}"
