from django.conf import settings
from django.db import models


class PlanStatus(models.TextChoices):
    # A pool above ROUTING_INLINE_POOL is planned by a job (planning_job): pending until it records the plan.
    PENDING = "pending", "Planning (background job)"
    FAILED = "failed", "Planning failed"
    DRAFT = "draft", "Draft (not applied)"
    APPROVED = "approved", "Approved (applied)"
    SUPERSEDED = "superseded", "Superseded by a later approved plan"


class RoutingPlan(models.Model):
    """Which comparisons go to people and which to the LM judge, for a human-labelling budget."""

    project = models.ForeignKey("projects.Project", on_delete=models.CASCADE, related_name="routing_plans")
    strategy = models.CharField(max_length=16)
    budget_text = models.CharField(max_length=40, help_text="The budget as typed: 25%, 0.25 or 300.")
    budget_share = models.FloatField(null=True, blank=True)
    budget_count = models.IntegerField(null=True, blank=True)
    seed = models.IntegerField(default=0)
    n_total = models.PositiveIntegerField(default=0)
    n_human = models.PositiveIntegerField(default=0)
    n_lm = models.PositiveIntegerField(default=0)
    predicted_score = models.FloatField(null=True, blank=True)
    predicted_score_all_lm = models.FloatField(null=True, blank=True)
    predicted_gain = models.FloatField(null=True, blank=True)
    top_features = models.JSONField(default=list, blank=True,
                                    help_text='[{"feature", "count", "mean_contribution"}] of the human side')
    model_info = models.JSONField(default=dict, blank=True, help_text="Performance model: pool size, R², kind.")
    requested_strategy = models.CharField(max_length=16, blank=True,
                                          help_text="The strategy asked for; strategy is the one that routed.")
    fallback_reason = models.TextField(blank=True, help_text="Why topk/optimal_pos was not used, when it was not.")
    evidence = models.JSONField(default=dict, blank=True,
                                help_text="rlcore RoutingEvidence: held-out gain over random, its interval, counts.")
    judge_config = models.ForeignKey("judging.JudgeConfig", null=True, blank=True, on_delete=models.SET_NULL,
                                     related_name="+")
    template = models.ForeignKey("judging.JudgePromptTemplate", null=True, blank=True, on_delete=models.SET_NULL,
                                 related_name="+")
    status = models.CharField(max_length=12, choices=PlanStatus.choices, default=PlanStatus.DRAFT)
    job = models.ForeignKey("jobs.Job", null=True, blank=True, on_delete=models.SET_NULL, related_name="+",
                            help_text="The LM labelling job an approval started.")
    planning_job = models.ForeignKey("jobs.Job", null=True, blank=True, on_delete=models.SET_NULL, related_name="+",
                                     help_text="The job that computed the plan (pools above ROUTING_INLINE_POOL).")
    error = models.TextField(blank=True, help_text="Why the planning job gave no plan, when it failed.")
    parent = models.ForeignKey("self", null=True, blank=True, on_delete=models.SET_NULL, related_name="+",
                               help_text="The plan this one re-ran.")
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)
    approved_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT,
                                    related_name="+")
    approved_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]

    def __str__(self) -> str:
        return f"Routing plan {self.pk} ({self.strategy}, {self.budget_text})"


class Route(models.TextChoices):
    HUMAN = "human", "Human"
    LM = "lm", "LM judge"


class DecisionStatus(models.TextChoices):
    PROPOSED = "proposed", "Proposed"
    HUMAN_QUEUE = "human_queue", "In the annotation queue"
    LM_PENDING = "lm_pending", "Waiting for the LM judge"
    LM_LABELLED = "lm_labelled", "Labelled by the LM judge"
    RETURNED = "returned", "No LM label: returned to the annotation queue"


class RoutingDecision(models.Model):
    """Where one comparison goes in a plan, and why."""

    plan = models.ForeignKey(RoutingPlan, on_delete=models.CASCADE, related_name="decisions")
    comparison = models.ForeignKey("annotation.Comparison", on_delete=models.CASCADE, related_name="+")
    route = models.CharField(max_length=8, choices=Route.choices)
    score = models.FloatField(default=0.0)
    top_features = models.JSONField(default=list, blank=True)
    status = models.CharField(max_length=12, choices=DecisionStatus.choices, default=DecisionStatus.PROPOSED)
    reason = models.TextField(blank=True, help_text="Why the LM gave no label, when it did not.")

    class Meta:
        ordering = ["id"]
        constraints = [models.UniqueConstraint(fields=["plan", "comparison"], name="routing_decision_once")]


class ResponseEmbedding(models.Model):
    """A response's sentence embedding (all-MiniLM-L6-v2 by default), computed by a worker job so
    that the web process never loads torch; routing uses it for embedding similarity features and
    for the proxy reward model's pair vectors."""

    response = models.OneToOneField("datasets.Response", on_delete=models.CASCADE, related_name="embedding")
    model_name = models.CharField(max_length=300)
    vector = models.BinaryField(help_text="float32 values, little-endian")
    created_at = models.DateTimeField(auto_now_add=True)


class PromptTag(models.Model):
    """A prompt's category tags from an LM tagger (``python -m rlcore routing tag``), kept apart from the
    imported metadata so a re-tag replaces them cleanly and the reason for no tag is kept. The latest
    tagging job wins; routing merges these tags with the metadata's category/topic/tag."""

    prompt = models.OneToOneField("datasets.Prompt", on_delete=models.CASCADE, related_name="lm_tag")
    tags = models.JSONField(default=list, blank=True, help_text="Categories the LM named; [] when none.")
    reason = models.TextField(blank=True, help_text="Why the prompt has no tag (refusal, unparseable reply, ...).")
    raw_reply = models.TextField(blank=True)
    categories = models.JSONField(default=list, blank=True, help_text="The category list it was asked to choose from.")
    model_name = models.CharField(max_length=300, blank=True)
    job = models.ForeignKey("jobs.Job", null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    updated_at = models.DateTimeField(auto_now=True)


class ResponseRewardScore(models.Model):
    """A registered reward model's score of a response; the spread of r(A) - r(B) across models is
    the routing feature "reward models disagree". Computed by a worker job (torch stays out of the web)."""

    response = models.ForeignKey("datasets.Response", on_delete=models.CASCADE, related_name="reward_scores")
    reward_model = models.ForeignKey("training.RewardModel", on_delete=models.CASCADE, related_name="+")
    score = models.FloatField()
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["response", "reward_model"], name="response_reward_score_unique")]
