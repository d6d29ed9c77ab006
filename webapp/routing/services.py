"""Writes for routing: compute a plan, approve it, follow the LM labels it asked for.

The pool a plan routes is the project's pairwise comparisons that no person has labelled yet.
Features are computed by rlcore.routing (lengths, lexical overlap, prompt tags, MiniLM embedding
similarity once an embedding job has stored the responses' vectors (the web process never loads
torch), and the judge's position bias and confidence once an LM label exists). ``topk`` and ``optimal_pos`` need a performance model, fitted on the
project's comparisons that have both a human and an LM label (at least MIN_FIT_POOL), and are used
only when it passes rlcore's RoutingGate; otherwise the plan is routed by ``random`` and keeps the reason.

Approving a plan applies it through the annotation queue's own switch, ``Comparison.is_active``:
the human side is active (the queue hands it out), the LM side is inactive and goes to an LM
labelling job. A comparison the judge could not label is made active again, with the reason.
"""

from __future__ import annotations

import logging
from pathlib import Path
from collections import defaultdict

import numpy as np
from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone

from webapp.annotation.models import Comparison, ComparisonKind, LabelSource, PreferenceLabel
from webapp.judging.models import JudgeConfig, JudgePromptTemplate, LMLabellingRun
from webapp.projects.models import Project
from webapp.routing.embeddings import embedding_pairs
from webapp.routing.reward_scores import reward_margins
from webapp.routing.models import DecisionStatus, PlanStatus, Route, RoutingDecision, RoutingPlan
from webapp.routing.tagging import lm_tags_by_prompt

logger = logging.getLogger(__name__)

MIN_FIT_POOL = 10
# The fit runs in the request (about 1.4 s per 1000 comparisons); a larger pool is sampled down to this.
MAX_FIT_POOL = 2000
FIT_SIMULATIONS = 120
TOP_FEATURES = 6


def routing_pool_queryset(*, project):
    """Pairwise comparisons no person has labelled yet, in id order (count it before loading it)."""
    return (Comparison.objects.select_related("prompt")
            .filter(project=project, kind=ComparisonKind.PAIR, human_label_count=0).order_by("id"))


def routing_pool(*, project) -> list[Comparison]:
    return list(routing_pool_queryset(project=project))


def _latest_lm_labels(comparison_ids) -> dict[int, PreferenceLabel]:
    out = {}
    for label in (PreferenceLabel.objects.filter(comparison_id__in=comparison_ids, source=LabelSource.LM)
                  .only("id", "comparison_id", "choice", "provenance").order_by("id")):
        out[label.comparison_id] = label
    return out


def _tags(prompt, lm_tags: list[str] | None = None) -> list[str]:
    """Category tags of a prompt: its metadata's category/topic/tag, then those of the LM tagger (routing.tagging)."""
    meta = prompt.metadata or {}
    given = [str(meta[k]).strip() for k in ("category", "topic", "tag") if isinstance(meta.get(k), str) and meta[k].strip()]
    return list(dict.fromkeys([*given, *(lm_tags or [])]))


def _routing_comparisons(comparisons: list[Comparison]):
    from rlcore.routing.features import RoutingComparison
    from webapp.datasets.models import Response

    texts = dict(Response.objects.filter(pk__in={r for c in comparisons for r in c.response_ids})
                 .values_list("id", "text"))
    lm = _latest_lm_labels([c.pk for c in comparisons])
    lm_tags = lm_tags_by_prompt({c.prompt_id for c in comparisons})
    margins = reward_margins(comparisons)
    out = []
    for c in comparisons:
        prov = (lm[c.pk].provenance or {}) if c.pk in lm else {}
        confidence = prov.get("confidence")
        out.append(RoutingComparison(
            comparison_id=str(c.pk), prompt=c.prompt.text, response_a=texts.get(c.response_ids[0], ""),
            response_b=texts.get(c.response_ids[1], ""), tags=_tags(c.prompt, lm_tags.get(c.prompt_id)),
            judge_position_disagreement=prov.get("position_bias") if c.pk in lm else None,
            judge_confidence=confidence if isinstance(confidence, (int, float)) else None,
            reward_margins=margins.get(c.pk, [])))
    return out


_VALUE = {"a": 1.0, "b": 0.0, "tie": 0.5}


def _fit_pool(project) -> tuple[list[Comparison], list[float], list[float]]:
    """Comparisons with both a human label (majority) and an LM label."""
    human: dict[int, list[float]] = defaultdict(list)
    lm: dict[int, float] = {}
    for cid, source, choice in (PreferenceLabel.objects.filter(comparison__project=project,
                                                               comparison__kind=ComparisonKind.PAIR,
                                                               choice__in=list(_VALUE))
                                .order_by("id").values_list("comparison_id", "source", "choice")):
        if source == LabelSource.LM:
            lm[cid] = _VALUE[choice]
        else:
            human[cid].append(_VALUE[choice])
    ids = sorted(set(human) & set(lm))
    if len(ids) > MAX_FIT_POOL:
        ids = sorted(np.random.default_rng(0).choice(ids, MAX_FIT_POOL, replace=False).tolist())
    comparisons = list(Comparison.objects.select_related("prompt").filter(pk__in=ids).order_by("id"))
    h = [float(np.round(np.mean(human[c.pk]) * 2) / 2) for c in comparisons]
    return comparisons, h, [lm[c.pk] for c in comparisons]


def _performance_model(project, route_items, route_embeddings, seed: int):
    """Fit the performance-prediction model; returns (model, bins, info) or raises ValidationError.
    Embedding features are used only when both the fit pool and the routed pool have them."""
    # pair_vectors: the proxy reward model's vectors, the ones ``routing features --vectors`` writes
    from rlcore.routing.features import build_feature_table, extract_features, fit_bins, pair_vectors
    from rlcore.routing.predictor import LabelledPool, fit_routing_model

    fit_comparisons, human, lm = _fit_pool(project)
    if len(fit_comparisons) < MIN_FIT_POOL:
        raise ValidationError({"strategy": (
            f"topk and optimal_pos predict the gain of each human label from comparisons that have both a "
            f"human and an LM label; this project has {len(fit_comparisons)} (at least {MIN_FIT_POOL} needed). "
            "Route with 'uncertainty' or 'random' first, or let people label some LM-labelled comparisons.")})
    fit_items = _routing_comparisons(fit_comparisons)
    fit_embeddings = embedding_pairs(fit_comparisons) if route_embeddings is not None else None
    if fit_embeddings is None:
        route_embeddings = None
    fit_raw = extract_features(fit_items, embeddings=fit_embeddings)
    route_raw = extract_features(route_items, embeddings=route_embeddings)
    bins = fit_bins(fit_raw + route_raw)
    fit_table = build_feature_table(fit_raw, bins)
    pool = LabelledPool(comparison_ids=fit_table.ids, human=human, lm=lm)
    model = fit_routing_model(fit_table.matrix(), fit_table.feature_names, pool,
                              pair_vectors(fit_items, fit_embeddings), n_simulations=FIT_SIMULATIONS, seed=seed,
                              max_dims=64)
    return model, bins, route_embeddings, {
        "kind": model.kind, "fit_pool": len(fit_comparisons), "simulations": FIT_SIMULATIONS,
        "holdout_r2": model.holdout_r2, "pilot_halves": len(model.halves)}


def _summarise_features(reasons) -> list[dict]:
    """The features that sent comparisons to people: how often in a comparison's top reasons, mean weight.
    Running sums, so that a background plan's decisions can be summarised as they stream past."""
    counts: dict[str, list[float]] = {}  # feature -> [count, sum of contributions]
    for reason in reasons:
        if reason.route != "human":
            continue
        for contribution in reason.top_features:
            kept = counts.setdefault(contribution.feature, [0, 0.0])
            kept[0] += 1
            kept[1] += contribution.contribution
    ranked = sorted(counts.items(), key=lambda kv: (-kv[1][0], -abs(kv[1][1] / kv[1][0])))
    return [{"feature": f, "count": n, "mean_contribution": total / n} for f, (n, total) in ranked[:TOP_FEATURES]]


def _project_object(model, project, pk, field: str):
    if pk in (None, ""):
        return None
    obj = model.objects.filter(project=project, pk=pk).first()
    if obj is None:
        raise ValidationError({field: f"No {field.replace('_', ' ')} {pk} in this project."})
    return obj


def routing_plan_create(*, project, user, budget: str, strategy: str = "uncertainty", judge_config_id=None,
                        template_id=None, seed: int = 0, parent: RoutingPlan | None = None) -> RoutingPlan:
    """Compute a draft plan for the current pool; above ROUTING_INLINE_POOL, a pending plan and the job that
    computes it. Bad input raises ValidationError naming the field."""
    from rlcore.errors import UserError
    from rlcore.routing.features import build_feature_table, extract_features
    from rlcore.routing.predictor import STRATEGIES, Budget, parse_budget, plan_routing, resolve_budget

    from webapp.routing.steps_plan import STEPS_STRATEGY

    errors = {}
    if strategy not in (*STRATEGIES, STEPS_STRATEGY):
        errors["strategy"] = f"Unknown strategy '{strategy}': choose one of {', '.join((*STRATEGIES, STEPS_STRATEGY))}."
    budget_text = str(budget if budget is not None else "").strip()
    parsed: Budget | None = None
    if not budget_text:
        if strategy != "optimal_pos":
            errors["budget"] = "Give a human budget: a share (25%, 0.25) or a count of comparisons (300)."
    else:
        try:
            parsed = parse_budget(budget_text)
        except UserError as exc:
            errors["budget"] = str(exc)
    judge_config = template = None
    try:
        judge_config = _project_object(JudgeConfig, project, judge_config_id, "judge_config")
    except ValidationError as exc:
        errors.update(exc.message_dict)
    try:
        template = _project_object(JudgePromptTemplate, project, template_id, "template")
    except ValidationError as exc:
        errors.update(exc.message_dict)
    if errors:
        raise ValidationError(errors)
    if strategy == STEPS_STRATEGY:  # step items: their own planner (routing.steps_plan), not the pairwise one
        from webapp.routing.steps_plan import steps_plan_create

        return steps_plan_create(project=project, user=user, budget_text=budget_text, parsed=parsed, seed=seed,
                                 judge_config=judge_config, template=template, parent=parent)
    # Inline, a plan holds every pooled comparison and its features (about 7 KB each): a pool of 500k grew
    # a web worker past 2.2 GB until it was killed (bench/scale.py). Above the limit, counted before anything
    # is loaded, the pool is streamed to a file and planned by a job whose child never touches the database.
    pool_size = routing_pool_queryset(project=project).count()
    if not pool_size:
        raise ValidationError({"budget": "There are no pairwise comparisons without a human label to route."})
    if parsed is not None:
        try:
            resolve_budget(parsed, pool_size)
        except UserError as exc:
            raise ValidationError({"budget": f"{exc} (the pool is the {pool_size} pairwise comparisons nobody has "
                                             "labelled yet)"}) from exc
    settings_kept = dict(project=project, requested_strategy=strategy, budget_text=budget_text,
                         budget_share=parsed.share if parsed else None,
                         budget_count=parsed.count if parsed else None, seed=seed, judge_config=judge_config,
                         template=template, created_by=user, parent=parent)
    if pool_size > settings.ROUTING_INLINE_POOL:
        if strategy in ("topk", "optimal_pos"):
            raise ValidationError({"strategy": (
                f"The pool is {pool_size} pairwise comparisons, above the {settings.ROUTING_INLINE_POOL} planned in "
                f"the request (ROUTING_INLINE_POOL); a background plan routes by 'uncertainty' or 'random' only "
                f"for now ({strategy} needs the performance model fitted with the pool's bins).")})
        return _routing_plan_job_create(pool_size=pool_size, strategy=strategy, **settings_kept)
    comparisons = routing_pool(project=project)
    items = _routing_comparisons(comparisons)
    embeddings = embedding_pairs(comparisons)
    model, bins, info = None, None, {}
    if strategy in ("topk", "optimal_pos"):
        model, bins, embeddings, info = _performance_model(project, items, embeddings, seed)
    table = build_feature_table(extract_features(items, embeddings=embeddings), bins)
    info = {**info, "embeddings": embeddings is not None, "features": list(table.feature_names)}
    try:
        result = plan_routing(table, parsed, strategy, model=model, seed=seed)
    except UserError as exc:
        field = "budget" if str(exc).startswith("budget") else "strategy"
        raise ValidationError({field: str(exc)}) from exc
    with transaction.atomic():
        plan = RoutingPlan(**settings_kept)
        _record_result(plan, result, info)
    return plan


# A background plan (pools above ROUTING_INLINE_POOL): the request streams the pool to COMPARISONS_FILE, the
# child (`python -m rlcore routing plan --comparisons`) builds features a chunk at a time and writes PLAN_FILE,
# and record_routing_plan stores it when the job succeeds, in the job's own transaction.
PLAN_KIND = "routing_plan"
COMPARISONS_FILE = "comparisons.jsonl"
PLAN_FILE = "plan.json"
DECISIONS_FILE = "decisions.jsonl"
STREAM_CHUNK = 2000
DECISION_BATCH = 5000


def _routing_plan_job_create(*, pool_size: int, strategy: str, **kept) -> RoutingPlan:
    from webapp.jobs.models import Queue
    from webapp.jobs.services import job_create

    project, user = kept["project"], kept["created_by"]
    # Stored embeddings are not handed over yet (2 x 384 floats a comparison); the child plans without them.
    argv = ["routing", "plan", COMPARISONS_FILE, "--comparisons", "--no-embeddings", "--chunk-size", str(STREAM_CHUNK),
            "--strategy", strategy, "--seed", str(kept["seed"]), "-o", PLAN_FILE, "--decisions-output", DECISIONS_FILE]
    if kept["budget_text"]:
        argv[5:5] = ["--budget", kept["budget_text"]]
    with transaction.atomic():
        plan = RoutingPlan.objects.create(status=PlanStatus.PENDING, strategy=strategy, n_total=pool_size, **kept)
        plan.planning_job = job_create(project=project, user=user, kind=PLAN_KIND, argv=argv, queue=Queue.DEFAULT,
                                       spec={"plan_id": plan.pk, "n_pool": pool_size, "strategy": strategy},
                                       title=f"routing plan {plan.pk}: {pool_size} comparisons")
        plan.save(update_fields=["planning_job"])
        # Enqueued on commit: the file is complete before a worker can start the job. One server-side
        # cursor (one snapshot), a chunk of rows and their signals in memory at a time.
        folder = Path(plan.planning_job.output_dir)
        folder.mkdir(parents=True, exist_ok=True)
        with (folder / COMPARISONS_FILE).open("w", encoding="utf-8") as out:
            chunk: list[Comparison] = []
            for comparison in routing_pool_queryset(project=project).iterator(chunk_size=STREAM_CHUNK):
                chunk.append(comparison)
                if len(chunk) == STREAM_CHUNK:
                    _write_rows(out, chunk)
                    chunk = []
            _write_rows(out, chunk)
    return plan


def _write_rows(out, comparisons: list[Comparison]) -> None:
    for item in _routing_comparisons(comparisons):
        out.write(item.model_dump_json() + "\n")


def _record_result(plan: RoutingPlan, result, info: dict, reasons=None) -> None:
    """Store an rlcore RoutingPlan on ``plan`` (a draft from now on) and write its decisions in batches;
    ``reasons`` (an iterable, e.g. streamed from a file) replaces ``result.reasons``. Comparisons deleted
    since the pool was frozen are left out and counted."""
    plan.strategy, plan.fallback_reason = result.strategy, result.fallback_reason or ""
    plan.evidence = result.evidence.model_dump() if result.evidence else {}
    plan.n_total, plan.n_human, plan.n_lm = result.n_total, result.n_human, result.n_lm
    plan.predicted_score, plan.predicted_score_all_lm = result.predicted_score, result.predicted_score_all_lm
    plan.predicted_gain, plan.model_info, plan.status = result.predicted_gain, info, PlanStatus.DRAFT
    plan.save()
    human_side: list = []  # only the human side's reasons are summarised (at most the budget)
    dropped = 0
    for batch in _batches(reasons if reasons is not None else result.reasons, DECISION_BATCH):
        human_side.extend(r for r in batch if r.route == "human")
        alive = set(Comparison.objects.filter(project_id=plan.project_id, pk__in=[int(r.comparison_id) for r in batch])
                    .values_list("pk", flat=True))
        dropped += len(batch) - len(alive)
        RoutingDecision.objects.bulk_create([
            RoutingDecision(plan=plan, comparison_id=int(r.comparison_id), route=r.route, score=r.score,
                            top_features=[c.model_dump() for c in r.top_features])
            for r in batch if int(r.comparison_id) in alive], batch_size=DECISION_BATCH)
    plan.top_features = _summarise_features(human_side)
    if dropped:
        plan.model_info = {**info, "deleted_since_frozen": dropped}
    plan.save(update_fields=["top_features", "model_info"])


def _batches(items, size: int):
    batch = []
    for item in items:
        batch.append(item)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def _read_reasons(path: Path):
    from rlcore.routing.predictor import RoutingReason

    with path.open(encoding="utf-8") as handle:
        for line in handle:
            if line.strip():
                yield RoutingReason.model_validate_json(line)


def record_routing_plan(sender, job, **kwargs) -> int:
    """On success of a planning job, store its plan and decisions (in the job's transaction: a failure
    here fails the job with the reason). Decisions are read from DECISIONS_FILE a batch at a time."""
    if job.kind != PLAN_KIND:
        return 0
    from rlcore.routing.predictor import RoutingPlan as PlanResult

    plan = RoutingPlan.objects.select_for_update().filter(planning_job=job, status=PlanStatus.PENDING).first()
    if plan is None:  # deleted while it was planned
        return 0
    folder = Path(job.output_dir)
    result = PlanResult.model_validate_json((folder / PLAN_FILE).read_text(encoding="utf-8"))
    _record_result(plan, result, {"embeddings": False, "background_job": job.pk},
                   reasons=_read_reasons(folder / DECISIONS_FILE))
    return plan.n_total


def on_planning_job_finished(sender, job, **kwargs) -> None:
    """A planning job that ended without a plan (failed, cancelled) fails its plan with the reason."""
    if job.kind != PLAN_KIND or job.state == "succeeded":
        return
    reason = (job.error or f"the planning job was {job.state}").strip()
    RoutingPlan.objects.filter(planning_job=job, status=PlanStatus.PENDING).update(
        status=PlanStatus.FAILED, error=reason[-4000:])


def routing_plan_rerun(*, plan: RoutingPlan, user) -> RoutingPlan:
    """The same settings on today's pool and signals (labels that arrived since change both)."""
    return routing_plan_create(project=plan.project, user=user, budget=plan.budget_text,
                               strategy=plan.requested_strategy or plan.strategy,
                               judge_config_id=plan.judge_config_id, template_id=plan.template_id, seed=plan.seed,
                               parent=plan)


def routing_plan_approve(*, plan: RoutingPlan, user, judge_config_id=None, template_id=None) -> RoutingPlan:
    """Apply the plan: the human side goes into the annotation queue, the LM side to a labelling job."""
    from webapp.judging.runs import lm_labelling_job_create

    project = plan.project
    with transaction.atomic():
        # One approval per project at a time: two plans approved at once would both pass the
        # "no judge job still labelling" check and both start one.
        Project.objects.select_for_update().filter(pk=project.pk).first()
        plan = RoutingPlan.objects.select_for_update().get(pk=plan.pk)
        if plan.status != PlanStatus.DRAFT:
            raise ValidationError({"plan": f"Plan {plan.pk} is {plan.get_status_display().lower()}; "
                                           "re-run it to get a fresh draft."})
        if judge_config_id not in (None, ""):
            plan.judge_config = _project_object(JudgeConfig, project, judge_config_id, "judge_config")
        if template_id not in (None, ""):
            plan.template = _project_object(JudgePromptTemplate, project, template_id, "template")
        if plan.requested_strategy == "steps_agreement":
            from webapp.routing.steps_plan import steps_plan_approve

            return steps_plan_approve(plan=plan, user=user)
        decisions = list(plan.decisions.all())
        lm_side = [d.comparison_id for d in decisions if d.route == Route.LM]
        human_side = [d.comparison_id for d in decisions if d.route == Route.HUMAN]
        already = set(PreferenceLabel.objects.filter(comparison_id__in=lm_side, source=LabelSource.LM)
                      .values_list("comparison_id", flat=True))
        to_label = [cid for cid in lm_side if cid not in already]
        busy = LMLabellingRun.objects.filter(project=project, finished=False).select_related("job").first()
        if to_label and busy is not None:
            raise ValidationError({"plan": f"LM labelling job {busy.job_id} is still labelling "
                                           f"{len(busy.comparison_ids)} comparisons ({busy.job.state}): wait for it "
                                           "or cancel it, then approve."})
        if to_label and plan.judge_config is None:
            raise ValidationError({"judge_config": f"Choose the LM judge for the {len(to_label)} comparisons "
                                                   "routed to it (Judges page)."})
        RoutingPlan.objects.filter(project=project, status=PlanStatus.APPROVED).update(status=PlanStatus.SUPERSEDED)
        Comparison.objects.filter(pk__in=human_side).update(is_active=True)
        Comparison.objects.filter(pk__in=lm_side).update(is_active=False)
        plan.decisions.filter(route=Route.HUMAN).update(status=DecisionStatus.HUMAN_QUEUE)
        plan.decisions.filter(comparison_id__in=already).update(status=DecisionStatus.LM_LABELLED)
        plan.decisions.filter(comparison_id__in=to_label).update(status=DecisionStatus.LM_PENDING)
        if to_label:
            plan.job = lm_labelling_job_create(project=project, user=user, config=plan.judge_config,
                                               comparison_ids=to_label, template=plan.template)
        plan.status, plan.approved_by, plan.approved_at = PlanStatus.APPROVED, user, timezone.now()
        plan.save()
    return plan


def on_lm_labelling_finished(sender, run, labelled: list[int], failed: dict[int, str], **kwargs) -> None:
    """LM labels are in: mark them; comparisons without one go back to the annotation queue."""
    with transaction.atomic():
        decisions = RoutingDecision.objects.filter(plan__job_id=run.job_id, route=Route.LM)
        decisions.filter(comparison_id__in=labelled).update(status=DecisionStatus.LM_LABELLED)
        for comparison_id, reason in failed.items():
            decisions.filter(comparison_id=comparison_id).update(status=DecisionStatus.RETURNED, reason=reason)
        # Back to people: the queue hands out active comparisons only.
        Comparison.objects.filter(pk__in=list(failed)).update(is_active=True)
