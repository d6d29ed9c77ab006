"""Writes for rounds: create a round, build its head-to-head comparisons, store an over-optimisation report."""

from __future__ import annotations

from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.db.models import Max

from rlcore.errors import UserError
from webapp.rounds.models import GoldKind, OveroptimizationReport, Round


def _policy(project, policy_id, field: str):
    from webapp.training.models import Policy

    policy = Policy.objects.filter(project=project, pk=policy_id, deleted_at__isnull=True).first()
    if policy is None:
        raise ValidationError({field: f"Policy {policy_id} is not a registered policy of this project."})
    return policy


@transaction.atomic
def round_create(*, project, user, policy_id: int, reference_id: int | None = None, dataset_id: int | None = None,
                 notes: str = "") -> Round:
    """The next round (number = last + 1). Without a reference it is judged against round k-1's policy;
    round 1 needs one (there is no round 0)."""
    from webapp.datasets.models import Dataset

    previous = Round.objects.select_for_update().filter(project=project).order_by("-number").first()
    policy = _policy(project, policy_id, "policy_id")
    if reference_id is None:
        if previous is None:
            raise ValidationError({"reference_id": "Round 1 needs a reference policy (there is no round 0 to compare with)."})
        reference = previous.policy
    else:
        reference = _policy(project, reference_id, "reference_id")
    if reference.pk == policy.pk:
        raise ValidationError({"reference_id": "The reference must be another policy than the round's own."})
    dataset = None
    if dataset_id is not None:
        dataset = Dataset.objects.filter(project=project, pk=dataset_id).first()
        if dataset is None:
            raise ValidationError({"dataset_id": f"Dataset {dataset_id} is not in this project."})
    number = (previous.number if previous else 0) + 1
    try:
        with transaction.atomic():
            return Round.objects.create(project=project, number=number, policy=policy, reference=reference,
                                        dataset=dataset, notes=notes, created_by=user)
    except IntegrityError:  # another request took the number between our read and write (the lock covers rows only)
        raise ValidationError({"policy_id": "Another round was created at the same time: try again."}) from None


def round_build_comparisons(*, round: Round, dataset_id: int | None = None, pairs_per_prompt: int = 1,
                            overlap: int = 1) -> int:
    """Head-to-head comparisons of the round's policy against its reference on the round's prompt set,
    through annotation's builder (same dedup and COMPARISONS_BUILD_MAX cap); the router and annotators take
    them from there as any other comparison."""
    from webapp.annotation.services import comparisons_build
    from webapp.datasets.models import Dataset

    dataset = round.dataset
    if dataset_id is not None:
        dataset = Dataset.objects.filter(project=round.project, pk=dataset_id).first()
    if dataset is None:
        raise ValidationError({"dataset_id": "Pick the prompt set both policies answered (the round has none)."})
    return comparisons_build(project=round.project, dataset=dataset, strategy="head_to_head",
                             pairs_per_prompt=pairs_per_prompt, overlap=overlap,
                             policies=(round.policy_id, round.reference_id))


def overopt_report_create(*, project, user, name: str, gold_kind: str, samples: list[dict], gold_name: str = "",
                          rule_components: list[str] | None = None, run_id: int | None = None,
                          round_id: int | None = None) -> OveroptimizationReport:
    """Compute (rlcore) and store the report of scored checkpoint samples; refusals name the row and field."""
    from pydantic import ValidationError as PydanticError

    from rlcore.analysis.overoptimization import OveroptSettings, SampleScore, analyse_overoptimization
    from webapp.jobs.models import Job
    from webapp.training.services import GRPO_KIND

    errors = {}
    if not name.strip():
        errors["name"] = "Name the report."
    if gold_kind not in GoldKind.values:
        errors["gold_kind"] = f"Unknown gold signal '{gold_kind}': choose one of {', '.join(GoldKind.values)}."
    run = round_ = None
    if run_id is not None and (run := Job.objects.filter(project=project, pk=run_id, kind=GRPO_KIND).first()) is None:
        errors["run_id"] = f"Job {run_id} is not a GRPO run of this project."
    if round_id is not None and (round_ := Round.objects.filter(project=project, pk=round_id).first()) is None:
        errors["round_id"] = f"Round {round_id} is not in this project."
    if errors:
        raise ValidationError(errors)
    rows = []
    for index, row in enumerate(samples):
        try:
            rows.append(SampleScore.model_validate(row))
        except PydanticError as exc:
            error = exc.errors()[0]
            where = ".".join(str(p) for p in error["loc"])
            raise ValidationError({"samples": f"sample {index + 1}: {where + ': ' if where else ''}{error['msg']}"}) from None
    try:
        settings = OveroptSettings(rule_components=rule_components or [])
        report = analyse_overoptimization(rows, settings)
    except UserError as exc:
        raise ValidationError({"samples": str(exc)}) from None
    return OveroptimizationReport.objects.create(
        project=project, run=run, round=round_, name=name.strip(), gold_kind=gold_kind, gold_name=gold_name,
        rule_components=settings.rule_components, samples=[r.model_dump(exclude_none=True) for r in rows],
        report=report.model_dump(), created_by=user)
