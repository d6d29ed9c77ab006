"""Rounds of the design loop, and over-optimisation reports of GRPO runs (docs/rounds.md)."""

from django.conf import settings
from django.db import models


class Round(models.Model):
    """Round ``number`` of a project: its ``policy`` answers the round's prompts and is judged against
    ``reference`` (a fixed reference policy, or round k-1's policy). Win rates are computed from the
    head-to-head comparisons of the two policies' responses and their labels (selectors.round_win_rates)."""

    project = models.ForeignKey("projects.Project", on_delete=models.CASCADE, related_name="rounds")
    number = models.PositiveIntegerField()
    policy = models.ForeignKey("training.Policy", on_delete=models.PROTECT, related_name="rounds")
    reference = models.ForeignKey("training.Policy", on_delete=models.PROTECT, related_name="reference_rounds",
                                  help_text="What the policy is judged against.")
    dataset = models.ForeignKey("datasets.Dataset", on_delete=models.PROTECT, null=True, blank=True,
                                related_name="rounds", help_text="The prompt set (version) both policies answered.")
    notes = models.TextField(blank=True)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["project_id", "number"]
        constraints = [models.UniqueConstraint(fields=["project", "number"], name="round_number_once_per_project")]

    def __str__(self) -> str:
        return f"Round {self.number}"


class GoldKind(models.TextChoices):
    HUMAN_WIN_RATE = "human_win_rate", "Held-out human win rate against the reference"
    LM_JUDGE = "lm_judge", "An LM judge"
    REWARD_MODEL = "reward_model", "A different reward model"


class OveroptimizationReport(models.Model):
    """rlcore.analysis.overoptimization's report for chosen checkpoints of one GRPO run, stored with the
    scored samples it rests on so the page and the API read the same numbers later."""

    project = models.ForeignKey("projects.Project", on_delete=models.CASCADE, related_name="overopt_reports")
    run = models.ForeignKey("jobs.Job", on_delete=models.CASCADE, null=True, blank=True, related_name="+",
                            help_text="The GRPO run whose checkpoints were scored.")
    round = models.ForeignKey(Round, on_delete=models.SET_NULL, null=True, blank=True, related_name="overopt_reports")
    name = models.CharField(max_length=200)
    gold_kind = models.CharField(max_length=16, choices=GoldKind.choices)
    gold_name = models.CharField(max_length=300, blank=True, help_text="Which judge / reward model / label set.")
    rule_components = models.JSONField(default=list, blank=True)
    scoring_job = models.ForeignKey("jobs.Job", on_delete=models.SET_NULL, null=True, blank=True, related_name="+",
                                    help_text="The overopt_score job that scored the checkpoints (None: posted).")
    partial = models.TextField(blank=True, help_text="Why the report covers fewer checkpoints than asked ('' when whole).")
    samples = models.JSONField(default=list, help_text="The SampleScore rows, as given.")
    human_gold = models.JSONField(default=dict, blank=True, help_text=(
        "Gold = human win rate: {'start_policy_id', 'checkpoints': {label: {'policy_id', 'comparison_ids'}}}, the "
        "head-to-head comparisons (checkpoint vs start) sent to the annotation queue; {} for other gold kinds."))
    report = models.JSONField(help_text="rlcore OveroptimizationReport, dumped.")
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at", "-id"]

    def __str__(self) -> str:
        return self.name
