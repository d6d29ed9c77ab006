from datetime import datetime
from typing import Any

from django.http import Http404
from django.shortcuts import get_object_or_404
from ninja import Router, Schema, Status
from pydantic import Field

from rlcore.judges.openai_compat import EndpointLimits
from rlcore.judges.outcomes import LabellingSummary
from webapp.annotation.apis import StepLabelOut
from webapp.judging import configs, lm_labels, prompt_templates, runs, selectors
from webapp.judging.models import JudgeConfig, JudgePromptTemplate
from webapp.projects.permissions import Capability, project_for_user

router = Router(tags=["judging"])


def _limit(name: str, *, null: str = ""):
    # rlcore's EndpointLimits field, checked by the service with the other settings (one 422 names every field)
    field = EndpointLimits.model_fields[name]
    return Field(None, description=f"{field.description}; null: {null or field.default} (rlcore EndpointLimits, "
                                   "which also sets its bounds)")


class JudgeConfigIn(Schema):
    name: str
    model: str
    backend: str = "openai"
    endpoint: str = ""
    max_concurrency: int | None = _limit("max_concurrency")
    timeout_s: float | None = _limit("timeout_s")
    max_retries: int | None = _limit("max_retries")
    api_key: str = Field("", description="Stored encrypted; never returned.")
    api_key_env: str = Field("", description="Or: the variable the workers read the key from.")


class JudgeConfigPatch(Schema):
    name: str | None = None
    model: str | None = None
    backend: str | None = None
    endpoint: str | None = None
    max_concurrency: int | None = _limit("max_concurrency", null="unchanged")
    timeout_s: float | None = _limit("timeout_s", null="unchanged")
    max_retries: int | None = _limit("max_retries", null="unchanged")
    api_key: str | None = Field(None, description="A new key (stored encrypted); null keeps the stored one.")
    api_key_env: str | None = None
    clear_api_key: bool = False


class JudgeConfigOut(Schema):
    id: int
    name: str
    backend: str
    endpoint: str
    model: str
    max_concurrency: int
    timeout_s: float
    max_retries: int
    api_key_env: str
    has_stored_key: bool
    key_source: str


class ConnectionTestOut(Schema):
    ok: bool
    message: str
    reply: str | None


class LabelRankingsIn(Schema):
    template_id: int | None = Field(None, description="A rank template of this project; none: default-rank@1.")
    grade_rubric: bool = Field(False, description="Also grade every response on the annotation rubric's "
                                                  "judge-graded criteria (criterion_scores on the labels).")


class LabellingJobOut(Schema):
    job_id: int
    mode: str
    comparison_ids: list[int]


class LabellingRunOut(Schema):
    job_id: int
    judge: str | None
    mode: str
    state: str
    finished: bool
    n_comparisons: int
    n_labels_recorded: int = Field(description="labels stored, order-disagreement ties included")
    n_without_label: int
    summary: LabellingSummary = Field(description="what the labels are worth: usable verdicts, genuine ties, "
                                                  "order disagreements, refusals, failures, and a warning")


class StepLMLabelIn(Schema):
    comparison_id: int
    grades: list[int | str]
    first_error: int | None = None
    model_version: str
    template_id: int | None = Field(None, description="the judge prompt template (mode 'steps') used")
    provenance: dict[str, Any] = Field(default_factory=dict)


class TemplateIn(Schema):
    name: str
    text: str
    mode: str = "compare"


class TemplateOut(Schema):
    id: int
    name: str
    mode: str
    version: int
    text: str
    created_at: datetime


def _config(request, project_id: int, config_id: int, capability=Capability.VIEW_DASHBOARDS):
    project, _ = project_for_user(request.auth, project_id, capability)
    return get_object_or_404(JudgeConfig, project=project, pk=config_id)


@router.get("/{project_id}/judges", response=list[JudgeConfigOut], summary="LM judge configs (keys never shown)")
def list_judges(request, project_id: int):
    project, _ = project_for_user(request.auth, project_id, Capability.VIEW_DASHBOARDS)
    return [selectors.judge_config_public(c) for c in selectors.judge_config_list(project=project)]


@router.post("/{project_id}/judges", response={201: JudgeConfigOut}, summary="Add an LM judge")
def create_judge(request, project_id: int, body: JudgeConfigIn):
    project, _ = project_for_user(request.auth, project_id, Capability.DESIGN)
    config = configs.judge_config_create(project=project, user=request.auth, **body.dict())
    return Status(201, selectors.judge_config_public(config))


@router.get("/{project_id}/judges/{config_id}", response=JudgeConfigOut)
def get_judge(request, project_id: int, config_id: int):
    return selectors.judge_config_public(_config(request, project_id, config_id))


@router.patch("/{project_id}/judges/{config_id}", response=JudgeConfigOut, summary="Change an LM judge")
def update_judge(request, project_id: int, config_id: int, body: JudgeConfigPatch):
    config = _config(request, project_id, config_id, Capability.DESIGN)
    data = body.dict()
    api_key, clear = data.pop("api_key"), data.pop("clear_api_key")
    config = configs.judge_config_update(config=config, api_key=api_key, clear_api_key=clear,
                                          **{k: v for k, v in data.items() if v is not None})
    return selectors.judge_config_public(config)


@router.delete("/{project_id}/judges/{config_id}", response={204: None},
               summary="Remove an LM judge and its stored key (its labels stay)")
def delete_judge(request, project_id: int, config_id: int):
    configs.judge_config_delete(config=_config(request, project_id, config_id, Capability.DESIGN))
    return Status(204, None)


@router.post("/{project_id}/judges/{config_id}/test", response=ConnectionTestOut,
             summary="Ask the judge one small question now (one attempt, at most 15 s)")
def test_judge(request, project_id: int, config_id: int):
    return configs.judge_config_test(config=_config(request, project_id, config_id, Capability.DESIGN))


@router.post("/{project_id}/judges/{config_id}/label-rankings", response={201: LabellingJobOut},
             summary="Queue a job: this judge ranks the project's N-way comparisons still without a label")
def label_rankings(request, project_id: int, config_id: int, body: LabelRankingsIn | None = None):
    config = _config(request, project_id, config_id, Capability.DESIGN)
    job = runs.lm_rankings_label(project=config.project, user=request.auth, config=config,
                                     template_id=body.template_id if body else None,
                                     grade_rubric=body.grade_rubric if body else False)
    return Status(201, {"job_id": job.pk, "mode": job.lm_labelling.mode,
                        "comparison_ids": job.lm_labelling.comparison_ids})


@router.get("/{project_id}/judge-runs", response=list[LabellingRunOut],
            summary="LM labelling runs, newest first, each with the counts behind its labels")
def list_runs(request, project_id: int):
    project, _ = project_for_user(request.auth, project_id, Capability.VIEW_DASHBOARDS)
    lm_labels.lm_runs_reconcile(project=project)
    recent = list(selectors.run_list(project=project)[:100])
    summaries = selectors.run_summaries(recent)
    return [selectors.run_summary_public(run, summaries[run.pk]) for run in recent]


@router.get("/{project_id}/judge-runs/{job_id}", response=LabellingRunOut,
            summary="One LM labelling run (by its job id) with the counts behind its labels")
def get_run(request, project_id: int, job_id: int):
    project, _ = project_for_user(request.auth, project_id, Capability.VIEW_DASHBOARDS)
    lm_labels.lm_runs_reconcile(project=project)
    run = get_object_or_404(selectors.run_list(project=project), job_id=job_id)
    return selectors.run_summary_public(run, selectors.run_summaries([run])[run.pk])


@router.post("/{project_id}/steps/lm-labels", response={201: StepLabelOut},
             summary="Record an LM judge's step grades (a pre-label annotators confirm or correct)")
def create_step_lm_label(request, project_id: int, body: StepLMLabelIn):
    project, _ = project_for_user(request.auth, project_id, Capability.DESIGN)
    return Status(201, lm_labels.step_prelabel_record(project=project, **body.dict()))


@router.get("/{project_id}/agreement/judge-templates",
            summary="LM judges' agreement with people per prompt-template version (count, Wilson interval)")
def judge_template_agreement(request, project_id: int):
    project, _ = project_for_user(request.auth, project_id, Capability.VIEW_DASHBOARDS)
    return selectors.template_version_agreement(project=project)


@router.get("/{project_id}/judge-templates", response=list[TemplateOut], summary="Judge prompt templates, all versions")
def list_templates(request, project_id: int):
    project, _ = project_for_user(request.auth, project_id, Capability.VIEW_DASHBOARDS)
    return list(JudgePromptTemplate.objects.filter(project=project).order_by("name", "-version"))


@router.post("/{project_id}/judge-templates", response={201: TemplateOut},
             summary="Save a template version (a new name starts at 1; unchanged text saves nothing)")
def save_template(request, project_id: int, body: TemplateIn):
    project, _ = project_for_user(request.auth, project_id, Capability.DESIGN)
    return Status(201, prompt_templates.template_save(project=project, user=request.auth, **body.dict()))


# {path:name}: templates saved with a '/' in their name before names were checked can still be removed
@router.delete("/{project_id}/judge-templates/{path:name}", response={204: None},
               summary="Remove every version of a judge prompt template (labels made with it stay)")
def delete_template(request, project_id: int, name: str):
    project, _ = project_for_user(request.auth, project_id, Capability.DESIGN)
    if not prompt_templates.template_delete(project=project, name=name):
        raise Http404("No such template")
    return Status(204, None)
