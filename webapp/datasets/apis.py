from datetime import datetime
from typing import Any

from django.core.exceptions import ValidationError
from ninja import Field, File, Form, Router, Schema, Status
from ninja.files import UploadedFile

from webapp.datasets import selectors, services
from webapp.datasets.models import DatasetStatus, ImportMode, PreferenceLabels
from webapp.paging import offset_param
from webapp.projects.permissions import Capability, project_for_user

router = Router(tags=["datasets"])


class RowErrorOut(Schema):
    line: int
    message: str


class DatasetOut(Schema):
    id: int
    name: str
    source_format: str
    source_name: str
    mode: str
    preference_labels: str
    status: str
    row_count: int
    response_count: int
    label_count: int
    skipped_count: int
    metadata_columns: list[str]
    progress_percent: int
    error: str
    row_errors: list[RowErrorOut]
    created_at: datetime
    finished_at: datetime | None


class PromptOut(Schema):
    id: int
    source_line: int
    text: str
    messages: list[dict[str, Any]] | None
    metadata: dict[str, Any]
    responses: list[dict[str, Any]]


def _prompt_out(p) -> dict:
    return {"id": p.pk, "source_line": p.source_line, "text": p.text, "messages": p.messages, "metadata": p.metadata,
            "responses": [{"id": r.pk, "text": r.text, "messages": r.messages, "model_name": r.model_name,
                           "metadata": r.metadata} for r in p.responses.all()]}


@router.get("/{project_id}/datasets", response=list[DatasetOut], summary="Datasets of the project")
def list_datasets(request, project_id: int):
    project, _ = project_for_user(request.auth, project_id)
    return list(selectors.dataset_list(project=project))


@router.post("/{project_id}/datasets", response={201: DatasetOut, 202: DatasetOut},
             summary="Import a dataset (JSONL, CSV, Parquet, or a zipped HF save_to_disk folder)",
             description="Small files are imported during the request (201, status ready); large files, or "
                         "background=true, by a worker (202, status importing: poll GET .../datasets/{id}). "
                         "mode=strict imports nothing if any row is bad (422 listing every bad row); mode=skip "
                         "imports the good rows and lists the bad ones in row_errors. preference_labels=human|lm "
                         "imports each plain TRL row's chosen-over-rejected as a label of that source (one rater "
                         "per file); none (default) keeps it as response metadata. Rows exported by Reward Studio "
                         "always bring their own labels. step_rule (newline | blank_line | step_header, or rlcore StepSplit "
                         "JSON with kind, pattern, min_steps, max_steps) splits every response into steps (version "
                         "1) as the import ends; a response it cannot split fails the import, naming the row.")
def import_dataset(request, project_id: int, file: File[UploadedFile], name: Form[str] = "",
                   format: Form[str] = "", mode: Form[str] = ImportMode.STRICT, background: Form[bool | None] = None,
                   preference_labels: Form[str] = PreferenceLabels.NONE, step_rule: Form[str] = ""):
    project, _ = project_for_user(request.auth, project_id, Capability.DESIGN)
    dataset = services.dataset_import_upload(project=project, user=request.auth, uploaded=file, name=name,
                                             source_format=format or None, mode=mode, background=background,
                                             preference_labels=preference_labels, step_rule=step_rule or None)
    if dataset.status == DatasetStatus.FAILED:
        errors = {"file": [dataset.error] + [f"line {e['line']}: {e['message']}" for e in dataset.row_errors]}
        raise ValidationError(errors)
    return Status(202 if dataset.status == DatasetStatus.IMPORTING else 201, dataset)


@router.get("/{project_id}/datasets/{dataset_id}", response=DatasetOut)
def get_dataset(request, project_id: int, dataset_id: int):
    project, _ = project_for_user(request.auth, project_id)
    return selectors.dataset_get(project=project, dataset_id=dataset_id)


@router.get("/{project_id}/datasets/{dataset_id}/rows", response=list[PromptOut], summary="Imported rows")
def list_rows(request, project_id: int, dataset_id: int, limit: int = 50, offset: int = offset_param()):
    project, _ = project_for_user(request.auth, project_id)
    dataset = selectors.dataset_get(project=project, dataset_id=dataset_id)
    return [_prompt_out(p) for p in selectors.prompt_list(dataset=dataset, limit=min(max(limit, 1), 500),
                                                            offset=max(offset, 0))]


@router.delete("/{project_id}/datasets/{dataset_id}", response={204: None})
def delete_dataset(request, project_id: int, dataset_id: int):
    project, _ = project_for_user(request.auth, project_id, Capability.DESIGN)
    services.dataset_delete(dataset=selectors.dataset_get(project=project, dataset_id=dataset_id))
    return Status(204, None)


class StepSplitIn(Schema):
    rule: dict[str, Any] = Field(..., description='rlcore StepSplit: {"kind": "newline" | "blank_line" | '
                                                  '"step_header" | "regex", "pattern": RE2, "min_steps", "max_steps"}')


class StepSplitOut(Schema):
    responses: int
    steps: int
    rule: dict[str, Any]


@router.post("/{project_id}/datasets/{dataset_id}/steps", response={201: StepSplitOut},
             summary="Split every response into steps (a new version each time; the text is kept)")
def split_steps(request, project_id: int, dataset_id: int, body: StepSplitIn):
    project, _ = project_for_user(request.auth, project_id, Capability.DESIGN)
    dataset = selectors.dataset_get(project=project, dataset_id=dataset_id)
    return Status(201, services.steps_split(dataset=dataset, rule=body.rule))


@router.post("/{project_id}/steps/import", response={201: DatasetOut},
             summary="Import a TRL stepwise JSONL file (prompt, completions as steps, labels) with its step labels")
def import_stepwise(request, project_id: int, file: File[UploadedFile], name: Form[str] = ""):
    import shutil
    import uuid
    from pathlib import Path

    project, _ = project_for_user(request.auth, project_id, Capability.DESIGN)
    folder = services.upload_root() / uuid.uuid4().hex
    folder.mkdir(parents=True)
    try:
        target = folder / Path(file.name or "steps.jsonl").name
        with open(target, "wb") as out:
            for chunk in file.chunks():
                out.write(chunk)
        dataset = services.stepwise_import(project=project, user=request.auth, path=target, name=name)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    return Status(201, dataset)
