"""Reads for judging. A config is handed out as data without its key: pages and the API show
`key_source` ("stored (encrypted)", "environment variable X", "none"), never the key."""

from __future__ import annotations

from django.db.models import Count, Exists, OuterRef, QuerySet

from rlcore.judges.outcomes import LabellingSummary, summarize_outcomes

from webapp.judging.models import JudgeBackend, JudgeConfig, JudgePromptTemplate, LMLabelAttempt, LMLabellingRun


def judge_config_list(*, project) -> QuerySet[JudgeConfig]:
    return JudgeConfig.objects.filter(project=project).order_by("name")


def preview_judge_list(*, project) -> QuerySet[JudgeConfig]:
    """The judges a rubric's live preview can call from the web process (a local model only workers load)."""
    return judge_config_list(project=project).filter(backend=JudgeBackend.OPENAI)


def judge_config_public(config: JudgeConfig) -> dict:
    return {"id": config.pk, "name": config.name, "backend": config.backend, "endpoint": config.endpoint,
            "model": config.model, "max_concurrency": config.max_concurrency, "timeout_s": config.timeout_s,
            "max_retries": config.max_retries, "api_key_env": config.api_key_env,
            "has_stored_key": config.has_stored_key, "key_source": config.key_source}


def template_latest_list(*, project) -> list[JudgePromptTemplate]:
    """The newest version of each template name."""
    seen, out = set(), []
    for template in JudgePromptTemplate.objects.filter(project=project).order_by("name", "-version"):
        if template.name not in seen:
            seen.add(template.name)
            out.append(template)
    return out


def template_versions(*, project, name: str) -> QuerySet[JudgePromptTemplate]:
    return JudgePromptTemplate.objects.filter(project=project, name=name).order_by("-version")


def run_list(*, project) -> QuerySet[LMLabellingRun]:
    return LMLabellingRun.objects.filter(project=project).select_related("job", "judge_config").order_by("-id")


def run_summaries(runs) -> dict[int, LabellingSummary]:
    """Per run (by id), what its labels are worth (rlcore.judges.outcomes): usable verdicts, genuine ties,
    order disagreements, refusals, failed calls, unparseable replies, and the warning; one query."""
    runs = list(runs)
    outcomes: dict[int, list[str]] = {run.pk: [] for run in runs}
    for row in (LMLabelAttempt.objects.filter(run__in=runs).exclude(outcome="")
                .values("run_id", "outcome").annotate(n=Count("id"))):
        outcomes[row["run_id"]] += [row["outcome"]] * row["n"]
    return {run.pk: summarize_outcomes(outcomes[run.pk], mode=run.mode) for run in runs}


def run_summary_public(run: LMLabellingRun, summary: LabellingSummary) -> dict:
    """A run for the API and pages: its job, judge, state and the counts behind its labels."""
    return {"job_id": run.job_id, "judge": run.judge_config.name if run.judge_config else None, "mode": run.mode,
            "state": run.job.state, "finished": run.finished, "n_comparisons": len(run.comparison_ids),
            "n_labels_recorded": run.n_labelled, "n_without_label": run.n_failed,
            "summary": summary.model_dump(mode="json")}


def attempts_for(*, job_id: int) -> QuerySet[LMLabelAttempt]:
    return LMLabelAttempt.objects.filter(run__job_id=job_id).order_by("id")


def lm_runs_graded_with(*, rubric_versions) -> int:
    """How many LM labelling runs graded every response on one of ``rubric_versions`` too."""
    return LMLabellingRun.objects.filter(rubric_version__in=rubric_versions).count()


def rankings_awaiting_label(*, project) -> QuerySet:
    """The project's N-way comparisons an LM judge may rank now: in the annotation queue (active), with
    no label yet (human or LM), held by no annotator, not in a labelling run still going, and not given
    back to people by a judge before (one that could not rank it: it is theirs now)."""
    from webapp.annotation.models import (
        Assignment, AssignmentStatus, Comparison, ComparisonKind, PreferenceLabel,
    )

    busy = {cid for ids in LMLabellingRun.objects.filter(project=project, finished=False)
            .values_list("comparison_ids", flat=True) for cid in ids}
    return (Comparison.objects.filter(project=project, kind=ComparisonKind.RANKING, is_active=True)
            .exclude(Exists(PreferenceLabel.objects.filter(comparison=OuterRef("pk"))))
            .exclude(Exists(Assignment.objects.filter(comparison=OuterRef("pk"), status=AssignmentStatus.ACTIVE)))
            .exclude(Exists(LMLabelAttempt.objects.filter(comparison=OuterRef("pk"))))
            .exclude(pk__in=busy).order_by("id"))


def step_items_awaiting_prelabel(*, project) -> QuerySet:
    """The project's step items an LM judge may pre-label now: in the queue (active), still wanting people's
    labels (fewer than their overlap), with no LM pre-label yet and in no labelling run still going. An item
    whose earlier pre-label failed is offered again (a new run may use another judge or template)."""
    from django.db.models import F

    from webapp.annotation.models import Comparison, ComparisonKind, StepLabel, StepLabelSource

    busy = {cid for ids in LMLabellingRun.objects.filter(project=project, finished=False)
            .values_list("comparison_ids", flat=True) for cid in ids}
    return (Comparison.objects.filter(project=project, kind=ComparisonKind.STEPS, is_active=True,
                                      human_label_count__lt=F("overlap"))
            .exclude(Exists(StepLabel.objects.filter(comparison=OuterRef("pk"), source=StepLabelSource.LM)))
            .exclude(pk__in=busy).order_by("id"))


def template_version_agreement(*, project) -> list[dict]:
    """LM judges' agreement with people per prompt-template version (name@version), so an edited prompt
    shows whether it got better: over every (LM label, human label) pair on the same pair comparison, the
    share with the same canonical choice (a / b / tie), with its count, a 95% Wilson interval and the
    dates its labels span. A version whose labels share no comparison with a person says so."""
    from collections import defaultdict

    from rlcore.training.calibration import wilson_interval
    from webapp.annotation.models import Choice, LabelSource, PreferenceLabel

    lm = list(LMLabelAttempt.objects.filter(run__project=project, label__isnull=False,
                                            label__choice__in=(Choice.A, Choice.B, Choice.TIE))
              .values_list("label__comparison_id", "label__choice", "label__created_at", "run__template__name",
                           "run__template__version", "run__job__spec"))
    humans = defaultdict(list)
    for cid, choice in (PreferenceLabel.objects.filter(comparison_id__in={row[0] for row in lm},
                                                       source=LabelSource.HUMAN,
                                                       choice__in=(Choice.A, Choice.B, Choice.TIE))
                        .values_list("comparison_id", "choice")):
        humans[cid].append(choice)
    versions: dict[str, dict] = {}
    for cid, choice, at, name, version, spec in lm:
        key = f"{name}@{version}" if name else (spec or {}).get("template", "default")
        v = versions.setdefault(key, {"template": key, "n_lm_labels": 0, "n_with_human": 0, "n_pairs": 0,
                                      "n_agree": 0, "first_label_at": at, "last_label_at": at})
        v["n_lm_labels"] += 1
        v["first_label_at"], v["last_label_at"] = min(v["first_label_at"], at), max(v["last_label_at"], at)
        if humans[cid]:
            v["n_with_human"] += 1
            v["n_pairs"] += len(humans[cid])
            v["n_agree"] += sum(h == choice for h in humans[cid])
    out = []
    for v in sorted(versions.values(), key=lambda v: v["first_label_at"]):
        if v["n_pairs"]:
            low, high = wilson_interval(v["n_agree"], v["n_pairs"])
            v.update(agreement=v["n_agree"] / v["n_pairs"], ci_low=low, ci_high=high, message="")
        else:
            v.update(agreement=None, ci_low=None, ci_high=None,
                     message=f"{v['template']}: none of its {v['n_lm_labels']} LM labels shares a comparison with a "
                             "human label, so its agreement with people is unknown; have people label some of them.")
        out.append(v)
    return out
