"""Routing for step items (issue 13): under a human budget, people get the step items the LM step judge is
expected to grade worst; the rest go to the "Pre-label steps" judge job (webapp.judging).

Kept apart from the pairwise planner (services.py): the pool, the signal and the label kind differ.

Expected agreement of an item = the measured human-LM step agreement (share of step grades where a
person's grade equals the latest LM pre-label's, over every judge model's pre-labels) of the items of
the same *step-count bucket* (STEP_BUCKETS) that both a person and the LM labelled. A bucket with fewer
than MIN_BUCKET_ITEMS such items takes the overall figure, and says so. With fewer than
MIN_STEP_OVERLAP doubly-labelled items in all, there is nothing to rank by: the plan falls back to a
seeded random draw and keeps the reason.
"""

from __future__ import annotations

import numpy as np
from django.core.exceptions import ValidationError
from django.db import transaction
from django.db.models import Exists, OuterRef
from django.utils import timezone

from webapp.annotation.models import Comparison, ComparisonKind, StepLabel, StepLabelSource
from webapp.routing.models import DecisionStatus, PlanStatus, Route, RoutingDecision, RoutingPlan

STEPS_STRATEGY = "steps_agreement"
STEPS_RANDOM = "steps_random"  # what a steps plan routed by when the overlap was too small
MIN_STEP_OVERLAP = 10
MIN_BUCKET_ITEMS = 3
# (label, lowest step count, highest step count): step count is the signal the judge's weakness follows
# most plainly (a long chain has more places for the judge to miss the first wrong step).
STEP_BUCKETS = [("1-2", 1, 2), ("3-4", 3, 4), ("5-8", 5, 8), ("9+", 9, 10**9)]
_PEOPLE = (StepLabelSource.HUMAN, StepLabelSource.REVIEWED)


def _bucket(n_steps: int) -> str:
    return next(name for name, low, high in STEP_BUCKETS if low <= n_steps <= high)


def _wilson(k: int, n: int, z: float = 1.959963984540054) -> list[float] | None:
    from rlcore.training.calibration import wilson_interval

    return list(wilson_interval(k, n, z)) if n else None


def steps_pool_queryset(*, project):
    """Step items no person has labelled yet, in id order."""
    people = StepLabel.objects.filter(comparison=OuterRef("pk"), source__in=_PEOPLE)
    return (Comparison.objects.select_related("prompt", "step_split")
            .filter(project=project, kind=ComparisonKind.STEPS).exclude(Exists(people)).order_by("id"))


def measured_agreement(*, project) -> dict:
    """Human-LM step agreement by step-count bucket over items labelled by both, with its counts."""
    lm: dict[int, list] = {}
    people: dict[int, list[list]] = {}
    for cid, source, grades in (StepLabel.objects.filter(comparison__project=project).order_by("id")
                                .values_list("comparison_id", "source", "grades")):
        if source == StepLabelSource.LM:
            lm[cid] = grades  # the latest pre-label, as on the agreement page
        else:
            people.setdefault(cid, []).append(grades)
    both = sorted(set(lm) & set(people))
    buckets = {name: {"bucket": name, "n_items": 0, "n_steps": 0, "n_agree": 0} for name, _, _ in STEP_BUCKETS}
    for cid in both:
        b = buckets[_bucket(len(lm[cid]))]
        b["n_items"] += 1
        for human in people[cid]:
            pairs = list(zip(lm[cid], human))
            b["n_steps"] += len(pairs)
            b["n_agree"] += sum(x == y for x, y in pairs)
    n_steps = sum(b["n_steps"] for b in buckets.values())
    n_agree = sum(b["n_agree"] for b in buckets.values())
    for b in buckets.values():
        b["agreement"] = b["n_agree"] / b["n_steps"] if b["n_steps"] else None
        # Steps of one item are not independent: the interval over steps is narrower than the truth.
        b["interval"] = _wilson(b["n_agree"], b["n_steps"])
    return {"n_items": len(both), "n_steps": n_steps, "n_agree": n_agree,
            "agreement": n_agree / n_steps if n_steps else None, "interval": _wilson(n_agree, n_steps),
            "by_bucket": list(buckets.values())}


def steps_plan_create(*, project, user, budget_text: str, parsed, seed: int, judge_config, template,
                      parent=None) -> RoutingPlan:
    from rlcore.errors import UserError
    from rlcore.routing.predictor import resolve_budget

    if parsed is None:
        raise ValidationError({"budget": "Give a human budget: a share (25%, 0.25) or a count of step items (30)."})
    items = list(steps_pool_queryset(project=project))
    if not items:
        raise ValidationError({"budget": "There are no step items without a human label to route."})
    try:
        n_human = resolve_budget(parsed, len(items))
    except UserError as exc:
        raise ValidationError({"budget": f"{exc} (the pool is the {len(items)} step items nobody has labelled "
                                         "yet)"}) from exc
    measured = measured_agreement(project=project)
    by_bucket = {b["bucket"]: b for b in measured["by_bucket"]}
    rng = np.random.default_rng(seed)
    tiebreak = rng.permutation(len(items))  # seeded: a rerun on the same pool gives the same plan
    fallback = ""
    if measured["n_items"] < MIN_STEP_OVERLAP:
        fallback = (f"Only {measured['n_items']} step item(s) have both a person's and the LM judge's grades; "
                    f"at least {MIN_STEP_OVERLAP} are needed to estimate where the judge is weak, so the "
                    f"{n_human} step items for people were drawn at random (seed {seed}).")
    decisions = []
    for index, c in enumerate(items):
        n_steps = len(c.step_split.steps or [])
        name = _bucket(max(n_steps, 1))
        b = by_bucket[name]
        if fallback:
            expected, why = None, {"feature": "random draw", "reason": "too little human-LM overlap"}
        elif b["n_items"] >= MIN_BUCKET_ITEMS:
            expected = b["agreement"]
            why = {"feature": f"steps={name}", "expected_agreement": expected, "n_items": b["n_items"],
                   "n_steps": b["n_steps"], "interval": b["interval"]}
        else:
            expected = measured["agreement"]
            why = {"feature": f"steps={name} (overall)", "expected_agreement": expected, "n_items": measured["n_items"],
                   "n_steps": measured["n_steps"], "interval": measured["interval"],
                   "reason": f"only {b['n_items']} doubly-labelled item(s) with {name} steps "
                             f"(< {MIN_BUCKET_ITEMS}): the overall agreement stands in"}
        score = 0.0 if expected is None else 1.0 - expected
        decisions.append([c, score, int(tiebreak[index]), why])
    decisions.sort(key=lambda d: (-d[1], d[2]))
    with transaction.atomic():
        plan = RoutingPlan.objects.create(
            project=project, strategy=STEPS_RANDOM if fallback else STEPS_STRATEGY, requested_strategy=STEPS_STRATEGY,
            budget_text=budget_text, budget_share=parsed.share, budget_count=parsed.count, seed=seed,
            n_total=len(items), n_human=n_human, n_lm=len(items) - n_human, fallback_reason=fallback,
            evidence={"mode": "steps", "estimated_by": "step-count bucket, all judge models' pre-labels",
                      "min_overlap": MIN_STEP_OVERLAP, "min_bucket_items": MIN_BUCKET_ITEMS, **measured},
            top_features=_summary(decisions[:n_human]), model_info={"kind": "steps"},
            judge_config=judge_config, template=template, created_by=user, parent=parent)
        RoutingDecision.objects.bulk_create([
            RoutingDecision(plan=plan, comparison=c, route=Route.HUMAN if i < n_human else Route.LM, score=score,
                            top_features=[why]) for i, (c, score, _, why) in enumerate(decisions)])
    return plan


def _summary(human_side) -> list[dict]:
    counts: dict[str, list] = {}
    for _, score, _, why in human_side:
        counts.setdefault(why["feature"], []).append(score)
    return [{"feature": f, "count": len(s), "mean_contribution": float(np.mean(s))}
            for f, s in sorted(counts.items(), key=lambda kv: -len(kv[1]))]


def steps_plan_approve(*, plan: RoutingPlan, user) -> RoutingPlan:
    """The human side stays in (or enters) the step queue; the LM side leaves it for a steps pre-label job."""
    from webapp.judging.models import LabellingMode, LMLabellingRun, PromptMode
    from webapp.judging.runs import lm_labelling_job_create

    decisions = list(plan.decisions.all())
    lm_side = [d.comparison_id for d in decisions if d.route == Route.LM]
    human_side = [d.comparison_id for d in decisions if d.route == Route.HUMAN]
    if lm_side and plan.judge_config is None:
        raise ValidationError({"judge_config": f"Choose the LM step judge for the {len(lm_side)} step items routed "
                                               "to it (Judges page)."})
    if plan.template is not None and plan.template.mode != PromptMode.STEPS:
        raise ValidationError({"template": f"Template {plan.template} is not a step grading (steps) template: "
                                           "choose one, or none for default-steps@1."})
    busy = LMLabellingRun.objects.filter(project=plan.project, finished=False).select_related("job").first()
    if lm_side and busy is not None:
        raise ValidationError({"plan": f"LM labelling job {busy.job_id} is still running ({busy.job.state}): wait "
                                       "for it or cancel it, then approve."})
    RoutingPlan.objects.filter(project=plan.project, status=PlanStatus.APPROVED,
                               requested_strategy=STEPS_STRATEGY).update(status=PlanStatus.SUPERSEDED)
    Comparison.objects.filter(pk__in=human_side).update(is_active=True)
    Comparison.objects.filter(pk__in=lm_side).update(is_active=False)
    plan.decisions.filter(route=Route.HUMAN).update(status=DecisionStatus.HUMAN_QUEUE)
    plan.decisions.filter(route=Route.LM).update(status=DecisionStatus.LM_PENDING)
    if lm_side:
        plan.job = lm_labelling_job_create(project=plan.project, user=user, config=plan.judge_config,
                                           comparison_ids=lm_side, template=plan.template, mode=LabellingMode.STEPS)
    plan.status, plan.approved_by, plan.approved_at = PlanStatus.APPROVED, user, timezone.now()
    plan.save()
    return plan


def steps_plan_reconcile(*, plan: RoutingPlan) -> None:
    """A finished steps job sends no routing signal (judging keeps pre-labels a suggestion), so the plan
    reads its attempts: a pre-label marks the item labelled, none sends it back to people with the reason."""
    from webapp.judging.models import AttemptStatus, LMLabellingRun

    if plan.requested_strategy != STEPS_STRATEGY or plan.job_id is None:
        return
    run = LMLabellingRun.objects.filter(job_id=plan.job_id, finished=True).first()
    pending = plan.decisions.filter(route=Route.LM, status=DecisionStatus.LM_PENDING)
    if run is None or not pending.exists():
        return
    with transaction.atomic():
        for attempt in run.attempts.filter(comparison_id__in=pending.values("comparison_id")):
            if attempt.status == AttemptStatus.LABELLED:
                pending.filter(comparison_id=attempt.comparison_id).update(status=DecisionStatus.LM_LABELLED)
            else:
                pending.filter(comparison_id=attempt.comparison_id).update(status=DecisionStatus.RETURNED,
                                                                           reason=attempt.reason)
                Comparison.objects.filter(pk=attempt.comparison_id).update(is_active=True)
