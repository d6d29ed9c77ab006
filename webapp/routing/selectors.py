"""Reads for routing: plans, their decisions, and human-LM agreement per routing feature."""

from __future__ import annotations

from collections import Counter

from django.db.models import QuerySet

from webapp.routing.models import ResponseRewardScore, RoutingDecision, RoutingPlan
from webapp.training.models import RewardModel


def response_scores(*, reward_model, response_ids) -> list[tuple[int, int, float]]:
    """(prompt id, response id, score) of the responses ``reward_model`` scored, among ``response_ids``."""
    return list(ResponseRewardScore.objects.filter(reward_model=reward_model, response_id__in=response_ids)
                .values_list("response__prompt_id", "response_id", "score"))


def registry_model_scores(*, project, path: str, response_ids) -> tuple[str, dict[int, float]] | None:
    """The name of the project's newest registered reward model at ``path`` and {response id: score} of those
    among ``response_ids`` a worker scored with it; None when no reward model of the registry is at ``path``."""
    model = (RewardModel.objects.filter(project=project, path=path, deleted_at__isnull=True)
             .order_by("-pk").first())
    if model is None:
        return None
    return model.name, dict(ResponseRewardScore.objects.filter(reward_model=model, response_id__in=response_ids)
                            .values_list("response_id", "score"))


def plan_list(*, project) -> QuerySet[RoutingPlan]:
    return RoutingPlan.objects.filter(project=project).select_related("judge_config", "template", "job")


def plan_decisions(*, plan: RoutingPlan) -> QuerySet[RoutingDecision]:
    return plan.decisions.select_related("comparison__prompt").order_by("-route", "-score", "id")


def decision_counts(*, plan: RoutingPlan) -> dict[str, int]:
    return dict(Counter(plan.decisions.values_list("status", flat=True)))


def feature_agreement(*, project) -> dict:
    """Agreement split human-human / human-LM / LM-LM, and human-LM agreement per routing feature."""
    from rlcore.agreement import LabelRecord, agreement_report, human_lm_agreement_by_feature
    from rlcore.routing.features import build_feature_table, extract_features
    from webapp.annotation.models import Choice, Comparison, ComparisonKind, PreferenceLabel
    from webapp.annotation.selectors import rater_id
    from webapp.routing.services import _routing_comparisons

    from django.contrib.auth import get_user_model

    usernames = dict(get_user_model().objects.filter(memberships__project=project).values_list("id", "username"))
    records = []
    for label in (PreferenceLabel.objects.filter(comparison__project=project, comparison__kind=ComparisonKind.PAIR)
                  .exclude(choice=Choice.RANKING)
                  .only("id", "comparison_id", "source", "annotator_id", "choice", "model_version", "provenance")):
        rid, kind = rater_id(label, usernames)
        records.append(LabelRecord(comparison_id=str(label.comparison_id), rater_id=rid, rater_kind=kind,
                                   value={"a": "A", "b": "B", "tie": "tie"}[label.choice]))
    report = agreement_report(records, level="nominal")
    kinds: dict[str, set[str]] = {}
    for r in records:
        kinds.setdefault(r.comparison_id, set()).add(r.rater_kind)
    both = sorted(int(c) for c, k in kinds.items() if k == {"human", "lm"})
    by_feature = {}
    if both:
        comparisons = list(Comparison.objects.select_related("prompt").filter(pk__in=both).order_by("id"))
        table = build_feature_table(extract_features(_routing_comparisons(comparisons)))
        by_feature = human_lm_agreement_by_feature(
            records, {raw.comparison_id: names for raw, names in zip(table.raw, table.active)})
    return {"report": report, "by_feature": by_feature, "n_both": len(both)}
