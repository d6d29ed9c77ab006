"""REST API for rounds: create a round, build its head-to-head comparisons, win rates; over-optimisation
reports from scored checkpoint samples."""

from datetime import datetime
from typing import Any

from django.shortcuts import get_object_or_404
from ninja import Router, Schema, Status
from pydantic import Field
from rlcore.analysis.checkpoint_scoring import OveroptScoreSettings

from webapp.projects.permissions import Capability, project_for_user
from webapp.rounds import selectors, services
from webapp.rounds.models import OveroptimizationReport, Round

router = Router(tags=["rounds"])


class RoundIn(Schema):
    policy_id: int = Field(description="The registry policy that answers in this round.")
    reference_id: int | None = Field(None, description="The policy it is judged against; default: round k-1's policy.")
    dataset_id: int | None = Field(None, description="The prompt set (version) both policies answered.")
    notes: str = ""


class RoundOut(Schema):
    id: int
    number: int
    policy_id: int
    reference_id: int
    dataset_id: int | None
    notes: str
    created_at: datetime


class BuildIn(Schema):
    dataset_id: int | None = Field(None, description="Default: the round's prompt set.")
    pairs_per_prompt: int = Field(1, description="Head-to-head pairs per prompt at most (i-th sample vs i-th).")
    overlap: int = Field(1, description="Distinct annotators wanted per comparison.")


class ReportIn(Schema):
    name: str
    gold_kind: str = Field(description="human_win_rate | lm_judge | reward_model")
    gold_name: str = ""
    run_id: int | None = Field(None, description="The GRPO run whose checkpoints were scored.")
    round_id: int | None = None
    rule_components: list[str] = Field(default_factory=list, description="Components that are rule checks.")
    samples: list[dict[str, Any]] = Field(description="rlcore SampleScore rows (analysis overopt --samples).")


class ReportOut(Schema):
    id: int
    name: str
    gold_kind: str
    gold_name: str
    run_id: int | None
    round_id: int | None
    report: dict[str, Any] = Field(description="rlcore OveroptimizationReport: checkpoints, peak, symptoms, gap_samples.")
    human_gold: dict[str, Any] = Field(description="Gold = human win rate: per checkpoint, people's labels on its "
                                       "head-to-head comparisons vs the start policy (n, wins, ties, losses, win_rate, "
                                       "Wilson low/high; win_rate null and 'needed' > 0 while too few); {} otherwise.")
    created_at: datetime


class ScoringJobIn(Schema):
    run_id: int = Field(description="The GRPO run whose checkpoints are scored.")
    steps: list[int] = Field(description="Checkpoint steps on disk (checkpoints/checkpoint-<step>).")
    dataset_id: int = Field(description="The held-out prompt set, the same for every checkpoint.")
    gold_kind: str = Field(description="human_win_rate | lm_judge | reward_model")
    gold_spec_version_id: int | None = Field(None, description="lm_judge / reward_model: the reward spec version "
                                                               "whose total is the gold.")
    gold_judge_id: int | None = Field(None, description="lm_judge: the stored judge (its key is handed over in a "
                                                        "file the job deletes, never on the command line).")
    round_id: int | None = None
    name: str = ""
    params: OveroptScoreSettings = Field(default_factory=OveroptScoreSettings, description=(
        "How the checkpoints are sampled (rlcore's OveroptScoreSettings); the prompts, checkpoints, reward and gold "
        "come from this body's other fields and the run."))


class ScoringJobOut(Schema):
    job_id: int
    queue: str
    run_id: int
    steps: list[int]
    gold_kind: str


def _round_out(r: Round) -> dict:
    return {"id": r.pk, "number": r.number, "policy_id": r.policy_id, "reference_id": r.reference_id,
            "dataset_id": r.dataset_id, "notes": r.notes, "created_at": r.created_at}


def _report_out(r: OveroptimizationReport) -> dict:
    # The page's view of the report: with human-win-rate gold, recomputed from people's labels on read.
    report, human_gold = selectors.overopt_report_view(report=r)
    return {"id": r.pk, "name": r.name, "gold_kind": r.gold_kind, "gold_name": r.gold_name, "run_id": r.run_id,
            "round_id": r.round_id, "report": report, "created_at": r.created_at, "human_gold": human_gold}


@router.get("/{project_id}/rounds", response=list[RoundOut], summary="Rounds of the design loop")
def list_rounds(request, project_id: int):
    project, _ = project_for_user(request.auth, project_id, Capability.VIEW_DASHBOARDS)
    return [_round_out(r) for r in selectors.round_list(project=project)]


@router.post("/{project_id}/rounds", response={201: RoundOut}, summary="Start the next round")
def create_round(request, project_id: int, body: RoundIn):
    project, _ = project_for_user(request.auth, project_id, Capability.DESIGN)
    r = services.round_create(project=project, user=request.auth, policy_id=body.policy_id,
                              reference_id=body.reference_id, dataset_id=body.dataset_id, notes=body.notes)
    return Status(201, _round_out(r))


@router.post("/{project_id}/rounds/{number}/comparisons", response={201: dict},
             summary="Build head-to-head comparisons: the round's policy against its reference")
def build_round_comparisons(request, project_id: int, number: int, body: BuildIn):
    project, _ = project_for_user(request.auth, project_id, Capability.DESIGN)
    r = get_object_or_404(Round, project=project, number=number)
    created = services.round_build_comparisons(round=r, dataset_id=body.dataset_id,
                                               pairs_per_prompt=body.pairs_per_prompt, overlap=body.overlap)
    return Status(201, {"created": created})


@router.get("/{project_id}/rounds/{number}/win-rates", response=dict,
            summary="Human and LM win rates against the reference (Wilson interval, ties as half), per category")
def round_win_rates(request, project_id: int, number: int):
    project, _ = project_for_user(request.auth, project_id, Capability.VIEW_DASHBOARDS)
    return selectors.round_win_rates(round=get_object_or_404(Round, project=project, number=number))


@router.post("/{project_id}/overoptimization", response={201: ReportOut},
             summary="Over-optimisation report from scored checkpoint samples (proxy, gold, KL)")
def create_report(request, project_id: int, body: ReportIn):
    project, _ = project_for_user(request.auth, project_id, Capability.DESIGN)
    r = services.overopt_report_create(project=project, user=request.auth, name=body.name, gold_kind=body.gold_kind,
                                       gold_name=body.gold_name, samples=body.samples, run_id=body.run_id,
                                       round_id=body.round_id, rule_components=body.rule_components)
    return Status(201, _report_out(r))


@router.post("/{project_id}/overoptimization/scoring-jobs", response={201: ScoringJobOut},
             summary="Score checkpoints of a GRPO run (proxy, gold, KL) in a job; its report appears when it succeeds")
def create_scoring_job(request, project_id: int, body: ScoringJobIn):
    project, _ = project_for_user(request.auth, project_id, Capability.DESIGN)
    job = services.overopt_scoring_job_create(
        project=project, user=request.auth, run_id=body.run_id, steps=body.steps, dataset_id=body.dataset_id,
        gold_kind=body.gold_kind, name=body.name, gold_spec_version_id=body.gold_spec_version_id,
        gold_judge_id=body.gold_judge_id, round_id=body.round_id, settings=body.params)
    return Status(201, {"job_id": job.pk, "queue": job.queue, "run_id": body.run_id, "steps": job.spec["steps"],
                        "gold_kind": body.gold_kind})


@router.get("/{project_id}/overoptimization/{report_id}", response=ReportOut, summary="An over-optimisation report")
def get_report(request, project_id: int, report_id: int):
    project, _ = project_for_user(request.auth, project_id, Capability.VIEW_DASHBOARDS)
    return _report_out(get_object_or_404(OveroptimizationReport, project=project, pk=report_id))
