"""REST API for rubrics and reward specs: list, create, versions, diff, preview, YAML export and import.

Reading needs the VIEW capability, writing (and previewing, which scores the project's data) DESIGN.
Definitions are the rlcore contracts as JSON; bad ones get 422 with each problem's field and a message
naming the criterion or component.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from django.http import HttpResponse
from django.shortcuts import get_object_or_404
from ninja import Router, Schema, Status
from pydantic import Field

from webapp.projects.permissions import Capability, project_for_user
from webapp.readers import readers
from webapp.rubrics import selectors, services
from webapp.rubrics.contracts import dump_yaml, parse_rubric
from webapp.rubrics.diffs import definition_diff
from webapp.rubrics.models import RewardSpec, RewardSpecVersion, Rubric, RubricVersion

router = Router(tags=["rubrics"])


class VersionOut(Schema):
    id: int
    number: int
    note: str
    definition: dict[str, Any]
    created_by: str
    created_at: datetime

    @staticmethod
    def resolve_created_by(obj) -> str:
        return obj.created_by.username


class RubricOut(Schema):
    id: int
    name: str
    use_for_annotation: bool
    latest_version: int | None
    created_at: datetime



class RubricIn(Schema):
    name: str
    definition: dict[str, Any]
    note: str = ""
    use_for_annotation: bool = False


class VersionIn(Schema):
    definition: dict[str, Any]
    note: str = ""


class RubricPatch(Schema):
    use_for_annotation: bool


class SpecOut(Schema):
    id: int
    name: str
    latest_version: int | None
    created_at: datetime


class SpecVersionOut(VersionOut):
    rubric_versions: list[dict[str, Any]]

    @staticmethod
    def resolve_rubric_versions(obj) -> list[dict[str, Any]]:
        return [{"id": v.pk, "rubric": v.rubric.name, "number": v.number}
                for v in obj.rubric_versions.select_related("rubric")]


class SpecIn(Schema):
    name: str
    definition: dict[str, Any]
    note: str = ""


class YamlIn(Schema):
    yaml: str = Field(description="the rubric or spec as YAML (or JSON); its 'name' picks what gets a new version")
    note: str = ""


class PreviewRow(Schema):
    prompt: str = ""
    completion: str
    columns: dict[str, Any] = Field(default_factory=dict, description="dataset columns (reference answers, ...)")


class RubricPreviewIn(Schema):
    definition: dict[str, Any]
    baseline_version_id: int | None = Field(None, description="rank changes against this version; "
                                                              "default: the latest version of the rubric with this name")
    rows: list[PreviewRow] | None = Field(None, max_length=1000,
                                          description="score these; default: a sample of the project's responses")
    limit: int = Field(selectors.PREVIEW_LIMIT, ge=1, le=200)
    judge_config_id: int | None = Field(
        None, description="grade the criteria without a rule with this (OpenAI-compatible) judge now; the sample "
                          f"is then at most {selectors.JUDGED_PREVIEW_LIMIT} responses and no baseline is compared")


class SpecPreviewIn(Schema):
    definition: dict[str, Any]
    rows: list[PreviewRow] | None = Field(None, max_length=1000)
    limit: int = Field(selectors.PREVIEW_LIMIT, ge=1, le=200)


class ServeOut(Schema):
    job_id: int
    state: str
    queue: str
    token: str = Field(description="the bearer token the server requires")
    url: str | None = Field(description="where it listens, once the worker started it (GET reward-servers/{job_id})")


def _rubric(request, project_id: int, rubric_id: int, capability: Capability) -> Rubric:
    project, _ = project_for_user(request.auth, project_id, capability)
    return get_object_or_404(Rubric, project=project, pk=rubric_id)


def _spec(request, project_id: int, spec_id: int, capability: Capability) -> RewardSpec:
    project, _ = project_for_user(request.auth, project_id, capability)
    return get_object_or_404(RewardSpec, project=project, pk=spec_id)


def _yaml_response(data: dict[str, Any], filename: str) -> HttpResponse:
    response = HttpResponse(dump_yaml(data), content_type="application/yaml; charset=utf-8")
    response["Content-Disposition"] = f'attachment; filename="{filename}"'
    return response


def _rows(body_rows: list[PreviewRow] | None) -> list[dict[str, Any]] | None:
    """Rows given in the body as preview rows; None (the project's sample) when none are given."""
    if body_rows is None:
        return None
    return [{**r.columns, "id": i, "prompt": r.prompt, "completion": r.completion} for i, r in enumerate(body_rows)]


# ---------------------------------------------------------------- rubrics


@router.get("/{project_id}/rubrics", response=list[RubricOut])
def list_rubrics(request, project_id: int):
    project, _ = project_for_user(request.auth, project_id, Capability.VIEW)
    return [_rubric_out(r) for r in selectors.rubric_list(project=project)]


def _rubric_out(rubric: Rubric) -> dict[str, Any]:
    latest = getattr(rubric, "latest", None)
    if latest is None:
        v = selectors.rubric_latest(rubric=rubric)
        latest = v.number if v else None
    return {"id": rubric.pk, "name": rubric.name, "use_for_annotation": rubric.use_for_annotation,
            "latest_version": latest, "created_at": rubric.created_at}


@router.post("/{project_id}/rubrics", response={201: VersionOut}, summary="Create a rubric (its version 1)")
def create_rubric(request, project_id: int, body: RubricIn):
    project, _ = project_for_user(request.auth, project_id, Capability.DESIGN)
    return Status(201, services.rubric_create(project=project, user=request.auth, name=body.name,
                                              definition=body.definition, note=body.note,
                                              use_for_annotation=body.use_for_annotation))


@router.post("/{project_id}/rubrics/import", response={201: VersionOut},
             summary="Import a rubric from YAML: a new version of the rubric with its name, or a new rubric")
def import_rubric(request, project_id: int, body: YamlIn):
    project, _ = project_for_user(request.auth, project_id, Capability.DESIGN)
    return Status(201, services.rubric_import(project=project, user=request.auth, text=body.yaml, note=body.note))


@router.post("/{project_id}/rubrics/preview", summary="Score a rubric (saved or not) on a sample of responses")
def preview_rubric(request, project_id: int, body: RubricPreviewIn):
    project, _ = project_for_user(request.auth, project_id, Capability.DESIGN)
    contract = parse_rubric(body.definition, selectors.project_columns(project=project))
    baseline = None
    if body.baseline_version_id is not None:
        baseline = get_object_or_404(RubricVersion, rubric__project=project, pk=body.baseline_version_id)
    else:
        rubric = Rubric.objects.filter(project=project, name__iexact=contract.name).first()
        baseline = selectors.rubric_latest(rubric=rubric) if rubric else None
    judge_config = None
    if body.judge_config_id is not None:
        judge_config = get_object_or_404(readers.judge_config_list(project=project), pk=body.judge_config_id)
    return selectors.rubric_preview(project=project, contract=contract, baseline=baseline, judge_config=judge_config,
                                    rows=_rows(body.rows), limit=body.limit)


@router.get("/{project_id}/rubrics/{rubric_id}", response=RubricOut)
def get_rubric(request, project_id: int, rubric_id: int):
    return _rubric_out(_rubric(request, project_id, rubric_id, Capability.VIEW))


@router.patch("/{project_id}/rubrics/{rubric_id}", response=RubricOut,
              summary="Mark (or unmark) the rubric annotators see")
def patch_rubric(request, project_id: int, rubric_id: int, body: RubricPatch):
    rubric = _rubric(request, project_id, rubric_id, Capability.DESIGN)
    return _rubric_out(services.rubric_set_annotation(rubric=rubric, use_for_annotation=body.use_for_annotation))


@router.delete("/{project_id}/rubrics/{rubric_id}", response={204: None},
               summary="Remove a rubric and its versions (422 naming what still uses it)")
def delete_rubric(request, project_id: int, rubric_id: int):
    services.rubric_delete(rubric=_rubric(request, project_id, rubric_id, Capability.DESIGN))
    return Status(204, None)


@router.get("/{project_id}/rubrics/{rubric_id}/versions", response=list[VersionOut])
def list_rubric_versions(request, project_id: int, rubric_id: int):
    rubric = _rubric(request, project_id, rubric_id, Capability.VIEW)
    return list(rubric.versions.select_related("created_by").order_by("-number"))


@router.post("/{project_id}/rubrics/{rubric_id}/versions", response={201: VersionOut},
             summary="Save a new version (versions are immutable)")
def create_rubric_version(request, project_id: int, rubric_id: int, body: VersionIn):
    rubric = _rubric(request, project_id, rubric_id, Capability.DESIGN)
    return Status(201, services.rubric_version_create(rubric=rubric, user=request.auth, definition=body.definition,
                                                      note=body.note))


@router.get("/{project_id}/rubrics/{rubric_id}/versions/{number}", response=VersionOut)
def get_rubric_version(request, project_id: int, rubric_id: int, number: int):
    rubric = _rubric(request, project_id, rubric_id, Capability.VIEW)
    return get_object_or_404(RubricVersion, rubric=rubric, number=number)


@router.get("/{project_id}/rubrics/{rubric_id}/versions/{number}/yaml", summary="Export a version as YAML")
def export_rubric_version(request, project_id: int, rubric_id: int, number: int):
    rubric = _rubric(request, project_id, rubric_id, Capability.VIEW)
    version = get_object_or_404(RubricVersion, rubric=rubric, number=number)
    return _yaml_response(version.definition, f"rubric-{rubric.pk}-v{number}.yaml")


@router.get("/{project_id}/rubrics/{rubric_id}/diff", summary="Diff two versions, criterion by criterion")
def diff_rubric(request, project_id: int, rubric_id: int, a: int, b: int):
    rubric = _rubric(request, project_id, rubric_id, Capability.VIEW)
    old = get_object_or_404(RubricVersion, rubric=rubric, number=a)
    new = get_object_or_404(RubricVersion, rubric=rubric, number=b)
    return {"a": a, "b": b, **definition_diff(old.definition, new.definition, items_key="criteria")}


# ---------------------------------------------------------------- reward specs


def _spec_out(spec: RewardSpec) -> dict[str, Any]:
    latest = getattr(spec, "latest", None)
    if latest is None:
        v = selectors.spec_latest(spec=spec)
        latest = v.number if v else None
    return {"id": spec.pk, "name": spec.name, "latest_version": latest, "created_at": spec.created_at}


@router.get("/{project_id}/reward-specs", response=list[SpecOut])
def list_specs(request, project_id: int):
    project, _ = project_for_user(request.auth, project_id, Capability.VIEW)
    return [_spec_out(s) for s in selectors.reward_spec_list(project=project)]


@router.post("/{project_id}/reward-specs", response={201: SpecVersionOut},
             summary="Create a reward spec (its version 1); rubric_path 'rubric://<name>[@<n>]' inlines a saved rubric")
def create_spec(request, project_id: int, body: SpecIn):
    project, _ = project_for_user(request.auth, project_id, Capability.DESIGN)
    return Status(201, services.reward_spec_create(project=project, user=request.auth, name=body.name,
                                                   definition=body.definition, note=body.note))


@router.post("/{project_id}/reward-specs/import", response={201: SpecVersionOut},
             summary="Import a reward spec from YAML: a new version of the spec with its name, or a new spec")
def import_spec(request, project_id: int, body: YamlIn):
    project, _ = project_for_user(request.auth, project_id, Capability.DESIGN)
    return Status(201, services.reward_spec_import(project=project, user=request.auth, text=body.yaml, note=body.note))


@router.post("/{project_id}/reward-specs/preview",
             summary="Score a reward spec on a sample of responses (rule, verifier and penalty components)")
def preview_spec(request, project_id: int, body: SpecPreviewIn):
    project, _ = project_for_user(request.auth, project_id, Capability.DESIGN)
    contract, _used = services.reward_spec_parse(project=project, definition=body.definition)
    return selectors.spec_preview(contract=contract, project=project, rows=_rows(body.rows), limit=body.limit)


@router.get("/{project_id}/reward-specs/{spec_id}", response=SpecOut)
def get_spec(request, project_id: int, spec_id: int):
    return _spec_out(_spec(request, project_id, spec_id, Capability.VIEW))


@router.delete("/{project_id}/reward-specs/{spec_id}", response={204: None},
               summary="Remove a reward spec and its versions (422 when a training job used it)")
def delete_spec(request, project_id: int, spec_id: int):
    services.reward_spec_delete(spec=_spec(request, project_id, spec_id, Capability.DESIGN))
    return Status(204, None)


@router.get("/{project_id}/reward-specs/{spec_id}/versions", response=list[SpecVersionOut])
def list_spec_versions(request, project_id: int, spec_id: int):
    spec = _spec(request, project_id, spec_id, Capability.VIEW)
    return list(spec.versions.select_related("created_by").order_by("-number"))


@router.post("/{project_id}/reward-specs/{spec_id}/versions", response={201: SpecVersionOut})
def create_spec_version(request, project_id: int, spec_id: int, body: VersionIn):
    spec = _spec(request, project_id, spec_id, Capability.DESIGN)
    return Status(201, services.reward_spec_version_create(spec=spec, user=request.auth, definition=body.definition,
                                                           note=body.note))


@router.get("/{project_id}/reward-specs/{spec_id}/versions/{number}", response=SpecVersionOut)
def get_spec_version(request, project_id: int, spec_id: int, number: int):
    spec = _spec(request, project_id, spec_id, Capability.VIEW)
    return get_object_or_404(RewardSpecVersion, spec=spec, number=number)


@router.post("/{project_id}/reward-specs/{spec_id}/versions/{number}/serve", response={201: ServeOut},
             summary="Serve this version over HTTP from a worker (a job; cancel it to stop the server)")
def serve_spec_version(request, project_id: int, spec_id: int, number: int):
    spec = _spec(request, project_id, spec_id, Capability.DESIGN)
    version = get_object_or_404(RewardSpecVersion, spec=spec, number=number)
    return Status(201, _serve_out(services.reward_spec_serve(version=version, user=request.auth)))


@router.get("/{project_id}/reward-servers/{job_id}", response=ServeOut,
            summary="A reward-server job: its state, token and URL (once its worker started it)")
def get_reward_server(request, project_id: int, job_id: int):
    from webapp.jobs.kinds import SERVE_REWARD_KIND
    from webapp.jobs.models import Job

    project, _ = project_for_user(request.auth, project_id, Capability.DESIGN)
    return _serve_out(get_object_or_404(Job, project=project, pk=job_id, kind=SERVE_REWARD_KIND))


def _serve_out(job) -> dict[str, Any]:
    return {"job_id": job.pk, "state": job.state, "queue": job.queue, "token": job.spec.get("token", ""),
            "url": selectors.reward_server_url(job=job)}


@router.get("/{project_id}/reward-specs/{spec_id}/versions/{number}/yaml", summary="Export a version as YAML")
def export_spec_version(request, project_id: int, spec_id: int, number: int):
    spec = _spec(request, project_id, spec_id, Capability.VIEW)
    version = get_object_or_404(RewardSpecVersion, spec=spec, number=number)
    return _yaml_response(version.definition, f"reward-spec-{spec.pk}-v{number}.yaml")


@router.get("/{project_id}/reward-specs/{spec_id}/diff", summary="Diff two versions, component by component")
def diff_spec(request, project_id: int, spec_id: int, a: int, b: int):
    spec = _spec(request, project_id, spec_id, Capability.VIEW)
    old = get_object_or_404(RewardSpecVersion, spec=spec, number=a)
    new = get_object_or_404(RewardSpecVersion, spec=spec, number=b)
    return {"a": a, "b": b, **definition_diff(old.definition, new.definition, items_key="components")}
