from datetime import datetime
from typing import Any

from django.core.handlers.asgi import ASGIRequest
from ninja import Router, Schema, Status
from pydantic import Field

from webapp.annotation import selectors, services
from webapp.datasets.selectors import dataset_get
from webapp.paging import offset_param
from webapp.projects.permissions import Capability, project_for_user

router = Router(tags=["annotation"])


class BuildIn(Schema):
    dataset_id: int
    strategy: str = Field("all_pairs", description="all_pairs | sampled_pairs | ranking | head_to_head")
    pairs_per_prompt: int = Field(1, description="sampled_pairs: pairs drawn per prompt; head_to_head: pairs at most")
    policies: list[int] | None = Field(None, description="head_to_head: two registry policy ids, the first is 'a'")
    ranking_size: int = Field(0, description="ranking: responses per ranking (0 = all, at least 3)")
    overlap: int = Field(1, description="distinct annotators wanted per comparison")
    seed: int = 0


class BuildOut(Schema):
    created: int


class OverlapIn(Schema):
    overlap: int
    comparison_ids: list[int] | None = Field(None, description="only these (default: every comparison)")


class OverlapOut(Schema):
    updated: int


class ComparisonOut(Schema):
    id: int
    prompt_id: int
    kind: str
    response_ids: list[int]
    overlap: int
    taken: int
    human_label_count: int
    is_active: bool


class ResponseShown(Schema):
    letter: str
    response_id: int
    text: str
    messages: list[dict[str, Any]] | None


class ItemOut(Schema):
    assignment_id: int
    comparison_id: int
    kind: str
    expires_at: datetime
    prompt: dict[str, Any]
    responses: list[ResponseShown]


class LabelIn(Schema):
    assignment_id: int | None = None
    comparison_id: int | None = None
    choice: str = Field("", description="'A', 'B' (as shown to you) or 'tie'; empty for a ranking")
    strength: int | None = Field(None, description="1 slightly better, 2 much better (ignored for a tie)")
    ranking: list[int] | None = Field(None, description="N-way: response ids, best first")
    criterion_scores: dict[str, dict[str, Any]] | None = Field(
        None, description='{"A": {"criterion": score}, "B": {...}} on the annotation rubric\'s scales')
    rationale: str = ""


class LabelOut(Schema):
    id: int
    comparison_id: int
    choice: str
    strength: int
    ranking: list[int] | None
    display_order: list[int]
    created_at: datetime


class SkipIn(Schema):
    assignment_id: int | None = None
    comparison_id: int | None = None


@router.post("/{project_id}/comparisons/build", response={201: BuildOut}, summary="Build comparisons from a dataset")
def build_comparisons(request, project_id: int, body: BuildIn):
    project, _ = project_for_user(request.auth, project_id, Capability.DESIGN)
    dataset = dataset_get(project=project, dataset_id=body.dataset_id)
    created = services.comparisons_build(project=project, dataset=dataset, strategy=body.strategy,
                                         pairs_per_prompt=body.pairs_per_prompt, ranking_size=body.ranking_size,
                                         overlap=body.overlap, seed=body.seed,
                                         policies=tuple(body.policies) if body.policies else None)
    return Status(201, {"created": created})


@router.get("/{project_id}/comparisons", response=list[ComparisonOut], summary="List comparisons")
def list_comparisons(request, project_id: int, dataset_id: int | None = None, limit: int = 100,
                     offset: int = offset_param()):
    project, _ = project_for_user(request.auth, project_id, Capability.VIEW_DASHBOARDS)
    qs = selectors.comparison_list(project=project, dataset_id=dataset_id)
    return list(qs[max(offset, 0):max(offset, 0) + min(max(limit, 1), 1000)])


@router.post("/{project_id}/comparisons/overlap", response=OverlapOut,
             summary="Change the overlap (also after labelling started)")
def set_overlap(request, project_id: int, body: OverlapIn):
    project, _ = project_for_user(request.auth, project_id, Capability.DESIGN)
    return {"updated": services.comparisons_set_overlap(project=project, overlap=body.overlap,
                                                        comparison_ids=body.comparison_ids)}


@router.post("/{project_id}/annotation/next", response={200: ItemOut, 204: None},
             summary="Your current item, or the next one from the queue (204: nothing left for you)")
def next_item(request, project_id: int):
    # The right to label is checked inside the queue statement (services.queue_next_item).
    item = services.queue_next_item(project_id=project_id, user=request.auth)
    if item is None:
        return Status(204, None)
    return item


@router.post("/{project_id}/annotation/labels", response={201: LabelOut},
             summary="Label your assigned item (choice as shown to you)")
def submit_label(request, project_id: int, body: LabelIn):
    # The right to label is checked with the assignment's read (services.queue_label_submit).
    label = services.queue_label_submit(project_id=project_id, user=request.auth, **body.dict())
    return Status(201, label)


@router.post("/{project_id}/annotation/skip", response={204: None}, summary="Give your item back unlabelled")
def skip_item(request, project_id: int, body: SkipIn):
    project, _ = project_for_user(request.auth, project_id, Capability.LABEL)
    services.assignment_skip(project=project, user=request.auth, **body.dict())
    return Status(204, None)


@router.post("/{project_id}/annotation/undo", response=ItemOut,
             summary="Withdraw your last label; its item is your current item again")
def undo_label(request, project_id: int):
    project, _ = project_for_user(request.auth, project_id, Capability.LABEL)
    assignment = services.label_undo_last(project=project, user=request.auth)
    return selectors.item_for(assignment)


@router.get("/{project_id}/agreement", summary="Agreement: overall, human-human / human-lm / lm-lm, per annotator",
            description="Pairwise labels at the top level; N-way rankings under `rankings`, as the pairwise "
                        "judgements each ranking implies (percent agreement = 1 - normalised Kendall tau distance).")
def agreement(request, project_id: int):
    project, _ = project_for_user(request.auth, project_id, Capability.VIEW_DASHBOARDS)
    result = selectors.agreement_for(project=project)
    return {**result["report"].model_dump(), "ordinal_alpha": result["ordinal_alpha"],
            "ordinal_alpha_by_pair_kind": result["ordinal_by_pair_kind"], "n_labels": result["n_labels"],
            "rankings": {**result["rankings"].model_dump(exclude={"level"}), "n_rankings": result["n_rankings"]}}


@router.get("/{project_id}/export", summary="Labels as a TRL preference dataset (JSONL or Parquet)",
            description="format=jsonl|parquet, conversational=true for chat messages, tie_policy=drop|split|keep "
                        "(keep: one row marked tie=true, trained with the Bradley-Terry tie target 1/2; split: both "
                        "orders, marked tie), source=human|lm (default both). Columns: prompt, chosen, rejected, "
                        "margin, tie and provenance. Headers X-Labels-In, X-Rows-Out, X-Tie-Rows and "
                        "X-Labels-Dropped (JSON: reason -> labels) say what the file rests on. "
                        "margin=ensemble&ensemble_job_id=J: each row's margin is the ensemble audit's adaptive "
                        "margin (the members' mean reward difference, chosen minus rejected); "
                        "X-Rows-Without-Ensemble-Score counts the rows that kept their strength (ties, rankings, "
                        "adjudications).")
def export(request, project_id: int, format: str = "jsonl", conversational: bool = False, tie_policy: str = "drop",
           source: str = "", dataset_id: int | None = None, margin: str = "strength",
           ensemble_job_id: int | None = None):
    project, _ = project_for_user(request.auth, project_id, Capability.VIEW_DASHBOARDS)
    path, summary = services.labels_export(project=project, fmt=format, conversational=conversational,
                                           tie_policy=tie_policy, source=source or None, dataset_id=dataset_id,
                                           margin=margin, ensemble_job_id=ensemble_job_id)
    return services.export_download(
        path, summary, asynchronous=isinstance(request, ASGIRequest),
        content_type="application/x-ndjson" if format == "jsonl" else "application/vnd.apache.parquet")


# ------------------------------------------------------------------ label quality: gold, raters, audit, adjudication


def _user_errors(call):
    """rlcore's UserError (too little to fit, an ensemble of one, ...) as the API's 422 naming the field."""
    from django.core.exceptions import ValidationError

    from rlcore.errors import UserError

    def wrapped(*args, field: str = "labels", **kwargs):
        try:
            return call(*args, **kwargs)
        except UserError as exc:
            raise ValidationError({field: str(exc)}) from None
    return wrapped


class GoldIn(Schema):
    comparison_ids: list[int]
    answer: str = Field(..., description="'a' or 'b' (canonical order; never a tie), '' to make them normal again")


class ComparisonIdsIn(Schema):
    comparison_ids: list[int]
    confirm: bool = Field(False, description="false: only say what it would touch; true: do it")


class ResolveIn(Schema):
    comparison_id: int
    choice: str = Field(..., description="'a', 'b' (canonical order) or 'tie'")
    strength: int = 1
    rationale: str = ""


class AuditSendIn(Schema):
    ensemble_job_id: int
    z: float = 1.0
    t: float = 0.0
    flags: list[str] = Field(["probably_wrong", "ambiguous"], description="which flags to send back")
    confirm: bool = Field(False, description="false: only say what it would touch; true: do it")


@router.post("/{project_id}/gold", summary="Mark comparisons as gold items with a known answer (a tie is refused)")
def set_gold(request, project_id: int, body: GoldIn):
    project, _ = project_for_user(request.auth, project_id, Capability.DESIGN)
    return {"updated": services.gold_set(project=project, comparison_ids=body.comparison_ids, answer=body.answer)}


@router.get("/{project_id}/gold/scores", summary="Each annotator's accuracy on gold items (count, Wilson interval)")
def gold_scores(request, project_id: int):
    project, _ = project_for_user(request.auth, project_id, Capability.VIEW_DASHBOARDS)
    return _user_errors(selectors.gold_scores)(project=project, field="answer").model_dump()


@router.get("/{project_id}/raters", summary="Dawid-Skene reliability per rater, without gold",
            description="Each rater's estimated accuracy and confusion matrix (rows: true class, columns: label "
                        "given, in `classes` order) with its label and item counts; items=true adds each item's "
                        "posterior.")
def raters(request, project_id: int, items: bool = False):
    project, _ = project_for_user(request.auth, project_id, Capability.VIEW_DASHBOARDS)
    fit = _user_errors(selectors.rater_reliability)(project=project)
    return fit.model_dump(exclude=None if items else {"items"})


@router.get("/{project_id}/adjudication", summary="Disagreements side by side, with any recorded resolution")
def adjudication_list(request, project_id: int):
    project, _ = project_for_user(request.auth, project_id, Capability.VIEW_DASHBOARDS)
    return selectors.disagreements(project=project)


@router.post("/{project_id}/adjudication/request",
             summary="Send comparisons to one more, different, annotator (confirm=false: counts only)")
def adjudication_request(request, project_id: int, body: ComparisonIdsIn):
    project, _ = project_for_user(request.auth, project_id, Capability.DESIGN)
    return services.adjudication_send(project=project, comparison_ids=body.comparison_ids, confirm=body.confirm)


@router.post("/{project_id}/adjudication/resolve", response={201: LabelOut},
             summary="Record a disagreement's resolution (a label of kind 'adjudication')")
def adjudication_resolve(request, project_id: int, body: ResolveIn):
    project, _ = project_for_user(request.auth, project_id, Capability.DESIGN)
    label = services.adjudication_record(project=project, user=request.auth, **body.dict())
    return Status(201, label)


@router.get("/{project_id}/audit", summary="Audit labels with a reward-model ensemble (mean and spread of margins)",
            description="Per decisive pair label: mu and sigma of the members' reward differences (chosen minus "
                        "rejected), its flag (probably_wrong: mu < -t and |mu| > z sigma; ambiguous: |mu| <= z "
                        "sigma), and what sending the flagged labels to adjudication would touch.")
def audit(request, project_id: int, ensemble_job_id: int, z: float = 1.0, t: float = 0.0):
    project, _ = project_for_user(request.auth, project_id, Capability.VIEW_DASHBOARDS)
    result, comparison_of = _user_errors(selectors.ensemble_audit)(project=project, job_id=ensemble_job_id, z=z, t=t,
                                                                   field="ensemble_job_id")
    return {**result.model_dump(), "comparison_of_label": comparison_of,
            "send_back": selectors.audit_preview(result, comparison_of)}


@router.post("/{project_id}/audit/send", summary="Send the audit's flagged comparisons to adjudication "
                                                 "(confirm=false: counts only)")
def audit_send(request, project_id: int, body: AuditSendIn):
    project, _ = project_for_user(request.auth, project_id, Capability.DESIGN)
    return services.audit_send(project=project, ensemble_job_id=body.ensemble_job_id, z=body.z, t=body.t,
                               flags=body.flags, confirm=body.confirm)


# ------------------------------------------------------------------ step items (issue 13)


class StepBuildIn(Schema):
    dataset_id: int
    overlap: int = Field(1, description="distinct annotators wanted per step item")
    scale: str = Field("ternary", description="ternary (good 1 / neutral 0 / bad -1) or score5 (1-5)")


class StepShown(Schema):
    index: int
    text: str
    start: int = Field(..., description="character span in the response's original text")
    end: int


class StepSuggestion(Schema):
    id: int
    grades: list[int]
    first_error: int | None
    model_version: str


class StepItemOut(ItemOut):
    step_split_id: int
    scale: str
    steps: list[StepShown]
    suggestion: StepSuggestion | None = Field(None, description="the LM judge's pre-label, to confirm or correct")


class StepLabelIn(Schema):
    assignment_id: int | None = None
    comparison_id: int | None = None
    grades: list[int | str] = Field(..., description="one per step: 1/0/-1 or good/neutral/bad (ternary), 1-5")
    first_error: int | None = Field(None, description="index of the first wrong step; null: the first bad one")
    note: str = ""
    suggestion_id: int | None = Field(None, description="the LM pre-label you were shown (its id), if any")


class StepLabelOut(Schema):
    id: int
    comparison_id: int
    step_split_id: int
    source: str
    scale: str
    grades: list[int]
    first_error: int | None
    changed_steps: int | None
    created_at: datetime


@router.post("/{project_id}/steps/build", response={201: BuildOut},
             summary="Build step items (one per response, on its current split) from a dataset")
def build_step_items(request, project_id: int, body: StepBuildIn):
    project, _ = project_for_user(request.auth, project_id, Capability.DESIGN)
    dataset = dataset_get(project=project, dataset_id=body.dataset_id)
    return Status(201, {"created": services.step_items_build(project=project, dataset=dataset,
                                                             overlap=body.overlap, scale=body.scale)})


@router.post("/{project_id}/annotation/steps/next", response={200: StepItemOut, 204: None},
             summary="Your current step item, or the next one (204: nothing left for you)")
def next_step_item(request, project_id: int):
    item = services.step_item_next(project_id=project_id, user=request.auth)
    return Status(204, None) if item is None else item


@router.post("/{project_id}/annotation/steps/labels", response={201: StepLabelOut},
             summary="Grade every step of your step item (and the first wrong step)")
def submit_step_label(request, project_id: int, body: StepLabelIn):
    label = services.step_label_submit(project_id=project_id, user=request.auth, **body.dict())
    return Status(201, label)


@router.get("/{project_id}/agreement/steps",
            summary="Step labels: agreement per step (alpha), on the first wrong step, and with the LM pre-labels")
def step_agreement(request, project_id: int):
    project, _ = project_for_user(request.auth, project_id, Capability.VIEW_DASHBOARDS)
    return selectors.step_agreement(project=project)


@router.get("/{project_id}/steps/export", summary="Step labels as TRL stepwise rows (JSONL)",
            description="prompt, completions (steps), labels (a step is good unless graded bad); the grades, scale, "
                        "first_error, source, rater and note as columns, so POST .../steps/import reads it back "
                        "losslessly. X-Labels-In / X-Rows-Out say what the file rests on.")
def export_steps(request, project_id: int):
    from django.http import FileResponse

    project, _ = project_for_user(request.auth, project_id, Capability.VIEW_DASHBOARDS)
    path, counts = services.step_labels_export(project=project)
    return FileResponse(open(path, "rb"), as_attachment=True, filename=path.name, content_type="application/x-ndjson",
                        headers={"X-Labels-In": str(counts["labels_in"]), "X-Rows-Out": str(counts["rows_out"])})
