"""Writes to datasets: uploads, imports (inline or as a background task), deletion.

An import never leaves half a dataset. Rows are written in batches while the dataset's status
is `importing` (selectors show only `ready` datasets' rows); if the import fails - a bad row in
strict mode, an unreadable file, a crash - every row it wrote is deleted and the status becomes
`failed`, with each bad row's line number and reason kept on the dataset.
"""

from __future__ import annotations

import logging
import shutil
import uuid
import zipfile
from collections import Counter
from pathlib import Path

import django.dispatch
from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone

from rlcore.datasets import ImportedRow, RowError, SourceError, SourceReader, iter_import_rows, preference_label
from webapp.datasets.models import Dataset, DatasetStatus, ImportMode, PreferenceLabels, Prompt, Response
from webapp.forms_util import pydantic_errors

log = logging.getLogger(__name__)

BATCH_ROWS = 1000
MAX_ROW_ERRORS = 200          # kept on the dataset (the count goes on beyond)
MAX_METADATA_COLUMNS = 200

# Labels in an imported file are the annotation app's rows, built on this app's prompts and responses; it is
# told through these signals (it imports this app, never the other way). Each is sent inside the import's
# transaction, and a receiver that writes labels returns how many.
#   preference_rows_imported(dataset, rows=[(prompt, ImportedRow, response ids in the row's order)], members)
#   step_rows_imported(dataset, rows=[(line, StepwiseRow, prompt, response, split)], members): a label that does
#     not fit its steps raises ValidationError, refusing the file;
#   dataset_rows_purging(dataset_id): before an import's rows are deleted (an import that failed or starts
#     over, a deleted dataset), so what was built on them goes first.
# ``members`` is the project's {username: user id}, for the labels' raters.
preference_rows_imported = django.dispatch.Signal()
step_rows_imported = django.dispatch.Signal()
dataset_rows_purging = django.dispatch.Signal()


def _labels_written(responses: list[tuple]) -> int:
    return sum(written or 0 for _, written in responses)


def _setting(name: str, default):
    return getattr(settings, name, default)


def max_upload_bytes() -> int:
    return int(_setting("DATASET_MAX_UPLOAD_BYTES", 1024**3))


def inline_import_bytes() -> int:
    """Files up to this size are imported during the request; larger ones by a worker."""
    return int(_setting("DATASET_INLINE_IMPORT_BYTES", 2 * 1024**2))


def upload_root() -> Path:
    return Path(settings.VAR_DIR) / "uploads" / "datasets"


def _save_upload(uploaded, folder: Path) -> Path:
    name = Path(uploaded.name or "upload").name or "upload"
    target = folder / name
    with open(target, "wb") as out:
        for chunk in uploaded.chunks():
            out.write(chunk)
    return target


def _unzip_hf_folder(archive: Path, folder: Path) -> Path:
    """A zipped `save_to_disk` folder, extracted safely; returns the dataset folder."""
    limit = max_upload_bytes() * 4
    root = folder / "unzipped"
    try:
        with zipfile.ZipFile(archive) as zf:
            total = 0
            for info in zf.infolist():
                total += info.file_size
                target = (root / info.filename).resolve()
                if not str(target).startswith(str(root.resolve())):
                    raise ValidationError({"file": f"{archive.name}: entry {info.filename!r} escapes the archive"})
                if total > limit:
                    raise ValidationError({"file": f"{archive.name} unpacks to more than {limit // 2**20} MB"})
            zf.extractall(root)
    except zipfile.BadZipFile:
        raise ValidationError({"file": f"{archive.name} is not a readable ZIP archive"}) from None
    for marker in ("dataset_info.json", "state.json", "dataset_dict.json"):
        found = sorted(root.rglob(marker), key=lambda p: len(p.parts))
        if found:
            return found[0].parent
    raise ValidationError({"file": f"{archive.name} holds no Hugging Face dataset (no dataset_info.json, "
                                   "state.json or dataset_dict.json inside)"})


@transaction.atomic
def dataset_create(*, project, user, name: str, path: Path, source_format: str | None = None,
                   mode: str = ImportMode.STRICT, source_name: str = "",
                   preference_labels: str = PreferenceLabels.NONE, step_rule=None) -> Dataset:
    """Check the source and record a dataset in `importing` state (rows come with dataset_import_run).
    ``step_rule`` (rlcore StepSplit, dict or JSON): split every response into steps as the import ends."""
    rule = step_rule_parse(step_rule)
    name = (name or "").strip() or (source_name or path.name)
    if len(name) > 200:
        raise ValidationError({"name": "Name is longer than 200 characters."})
    if mode not in ImportMode.values:
        raise ValidationError({"mode": f"Unknown mode '{mode}': choose strict or skip."})
    if preference_labels not in PreferenceLabels.values:
        raise ValidationError({"preference_labels": f"Unknown value '{preference_labels}': choose "
                                                    f"{', '.join(PreferenceLabels.values)}."})
    try:
        size = path.stat().st_size if path.is_file() else 0
        if size > max_upload_bytes():
            raise ValidationError({"file": f"{source_name or path.name} is {size / 2**20:,.0f} MB; the limit is "
                                           f"{max_upload_bytes() / 2**20:,.0f} MB (DATASET_MAX_UPLOAD_BYTES). "
                                           "Split it or convert it to Parquet."})
        reader = SourceReader(path, source_format or None, source_name or path.name)
    except SourceError as exc:
        raise ValidationError({"file": str(exc)}) from None
    return Dataset.objects.create(
        project=project, name=name, source_format=reader.format, source_name=source_name or path.name, mode=mode,
        preference_labels=preference_labels, upload_path=str(path), created_by=user, bytes_total=reader.total,
        step_rule=rule.model_dump(exclude_none=True) if rule is not None else None,
    )


def dataset_import_upload(*, project, user, uploaded, name: str = "", source_format: str | None = None,
                          mode: str = ImportMode.STRICT, background: bool | None = None,
                          preference_labels: str = PreferenceLabels.NONE, step_rule=None) -> Dataset:
    """Save an uploaded file and import it: during the request if small, else on a worker.

    A `.zip` upload is taken as a zipped Hugging Face `save_to_disk` folder.
    """
    if uploaded is None:
        raise ValidationError({"file": "Choose a file to import."})
    if uploaded.size is not None and uploaded.size > max_upload_bytes():
        raise ValidationError({"file": f"{uploaded.name} is {uploaded.size / 2**20:,.0f} MB; the limit is "
                                       f"{max_upload_bytes() / 2**20:,.0f} MB (DATASET_MAX_UPLOAD_BYTES)."})
    folder = upload_root() / uuid.uuid4().hex
    folder.mkdir(parents=True)
    try:
        path = _save_upload(uploaded, folder)
        if path.suffix.lower() == ".zip" and source_format in (None, "", "hf"):
            path, source_format = _unzip_hf_folder(path, folder), "hf"
        if _is_stepwise_upload(path, source_format, uploaded.name):
            # TRL stepwise rows (completions = a list of steps) are read as steps, with their labels: the same
            # import as .../steps/import (all or nothing, during the request), never prompts with the steps
            # left in metadata
            if step_rule_parse(step_rule) is not None:
                raise ValidationError({"step_rule": "This file gives its steps (TRL stepwise rows: completions is a "
                                                    "list of steps); leave the split rule empty."})
            dataset = stepwise_import(project=project, user=user, path=path, name=name)
            shutil.rmtree(folder, ignore_errors=True)
            return dataset
        dataset = dataset_create(project=project, user=user, name=name, path=path, source_format=source_format,
                                 mode=mode, source_name=Path(uploaded.name or path.name).name,
                                 preference_labels=preference_labels, step_rule=step_rule)
    except Exception:
        shutil.rmtree(folder, ignore_errors=True)
        raise
    if background is None:
        background = (uploaded.size or 0) > inline_import_bytes()
    if background:
        transaction.on_commit(lambda: _enqueue_import(dataset.pk))
        return dataset
    return dataset_import_run(dataset_id=dataset.pk)


def _is_stepwise_upload(path: Path, source_format: str | None, name: str | None) -> bool:
    from rlcore.datasets import source_is_stepwise

    try:
        return source_is_stepwise(path, source_format or None, name)
    except SourceError:
        return False  # dataset_create reads it again and says what is wrong with it


def _enqueue_import(dataset_id: int) -> None:
    from workers.tasks import import_dataset

    import_dataset.apply_async(args=[dataset_id], queue="default")


def _purge_rows(dataset_id: int) -> None:
    """Delete every row an import wrote, without loading them (raw deletes, children first)."""
    from webapp.datasets.models import StepSplit

    with transaction.atomic():
        dataset_rows_purging.send(sender=Dataset, dataset_id=dataset_id)
        for qs in (StepSplit.objects.filter(response__prompt__dataset_id=dataset_id),
                   Response.objects.filter(prompt__dataset_id=dataset_id),
                   Prompt.objects.filter(dataset_id=dataset_id)):
            qs._raw_delete(qs.db)


class _Writer:
    """Buffers normalised rows and writes them in batches (prompts, responses; labels: preference_rows_imported)."""

    def __init__(self, dataset: Dataset):
        self.dataset = dataset
        self.rows: list[ImportedRow] = []
        self.prompts = self.responses = self.labels = 0
        self.columns: dict[str, None] = {}
        self._members: dict[str, int] | None = None

    def add(self, row: ImportedRow) -> None:
        if self.dataset.preference_labels != PreferenceLabels.NONE:
            # one rater for the whole file in agreement statistics
            label = preference_label(row, self.dataset.preference_labels, f"dataset:{self.dataset.name}")
            if label is not None:
                row.labels.append(label)
        self.rows.append(row)
        if len(self.columns) < MAX_METADATA_COLUMNS:
            for key in row.metadata:
                self.columns.setdefault(key, None)
        if len(self.rows) >= BATCH_ROWS:
            self.flush()

    def _member_ids(self) -> dict[str, int]:
        if self._members is None:
            User = get_user_model()
            self._members = dict(User.objects.filter(memberships__project=self.dataset.project_id)
                                 .values_list("username", "id"))
        return self._members

    @transaction.atomic
    def flush(self) -> None:
        if not self.rows:
            return
        prompts = Prompt.objects.bulk_create([
            Prompt(dataset_id=self.dataset.pk, source_line=r.line, text=r.prompt_text, messages=r.prompt_messages,
                   metadata=r.metadata) for r in self.rows])
        responses = [Response(prompt_id=p.pk, text=resp.text, messages=resp.messages, model_name=resp.model_name[:200],
                              metadata=resp.metadata)
                     for p, r in zip(prompts, self.rows) for resp in r.responses]
        responses = Response.objects.bulk_create(responses)
        self.prompts += len(prompts)
        self.responses += len(responses)
        if any(r.labels for r in self.rows):
            self._write_labels(prompts, responses)
        self.rows.clear()

    def _write_labels(self, prompts, responses) -> None:
        cursor = 0
        todo = []
        for prompt, row in zip(prompts, self.rows):
            ids = [r.pk for r in responses[cursor:cursor + len(row.responses)]]
            cursor += len(row.responses)
            if row.labels and len(ids) >= 2:
                todo.append((prompt, row, ids))
        self.labels += _labels_written(preference_rows_imported.send(
            sender=Dataset, dataset=self.dataset, rows=todo, members=self._member_ids()))


def dataset_import_run(*, dataset_id: int) -> Dataset:
    """Read the dataset's source and write its rows; returns the dataset, `ready` or `failed`."""
    dataset = Dataset.objects.select_related("project").get(pk=dataset_id)
    if dataset.status != DatasetStatus.IMPORTING:
        return dataset  # a redelivered task: the import already ran
    # A redelivered task after a crash: start over from a clean slate.
    _purge_rows(dataset.pk)
    errors: list[dict] = []
    n_errors = 0
    writer = _Writer(dataset)
    strict = dataset.mode == ImportMode.STRICT
    try:
        reader = SourceReader(dataset.upload_path, dataset.source_format, dataset.source_name)
        last_progress = 0
        for item in iter_import_rows(reader):
            if isinstance(item, RowError):
                n_errors += 1
                if len(errors) < MAX_ROW_ERRORS:
                    errors.append({"line": item.line, "message": item.message})
                if strict and n_errors >= MAX_ROW_ERRORS:
                    break
                continue
            if strict and n_errors:
                continue  # nothing more will be kept; keep reading only to report every bad row
            writer.add(item)
            if writer.prompts != last_progress:
                last_progress = writer.prompts
                Dataset.objects.filter(pk=dataset.pk).update(
                    bytes_read=reader.done, bytes_total=reader.total, row_count=writer.prompts)
        if not (strict and n_errors):
            writer.flush()
    except SourceError as exc:
        return _fail(dataset, str(exc), errors, n_errors)
    except Exception as exc:  # a bug or the database: never leave half a dataset
        log.exception("import of dataset %s failed", dataset.pk)
        _fail(dataset, f"The import stopped unexpectedly ({type(exc).__name__}: {exc}). Nothing was imported.",
              errors, n_errors)
        raise
    if strict and n_errors:
        more = f" (the first {len(errors)} are listed)" if n_errors > len(errors) else ""
        return _fail(dataset, f"{n_errors} bad row{'s' if n_errors != 1 else ''}{more}: nothing was imported. "
                              "Fix them, or import again with 'skip bad rows'.", errors, n_errors)
    if writer.prompts == 0:
        return _fail(dataset, "No valid rows: nothing was imported." if n_errors else "The file has no rows.",
                     errors, n_errors)
    if dataset.step_rule:
        try:
            steps_split(dataset=dataset, rule=dataset.step_rule)
        except ValidationError as exc:
            return _fail(dataset, " ".join(exc.message_dict.get("step_rule", [str(exc)])), errors, n_errors)
    Dataset.objects.filter(pk=dataset.pk).update(
        status=DatasetStatus.READY, row_count=writer.prompts, response_count=writer.responses,
        label_count=writer.labels, skipped_count=n_errors, row_errors=errors, metadata_columns=list(writer.columns),
        bytes_read=reader.total, finished_at=timezone.now(), error="")
    _remove_upload(dataset.upload_path)
    dataset.refresh_from_db()
    return dataset


def _fail(dataset: Dataset, message: str, errors: list[dict], n_errors: int) -> Dataset:
    _purge_rows(dataset.pk)
    Dataset.objects.filter(pk=dataset.pk).update(
        status=DatasetStatus.FAILED, error=message, row_errors=errors, skipped_count=n_errors, row_count=0,
        response_count=0, label_count=0, finished_at=timezone.now())
    _remove_upload(dataset.upload_path)
    dataset.refresh_from_db()
    return dataset


def dataset_delete(*, dataset: Dataset) -> None:
    if dataset.status == DatasetStatus.IMPORTING:
        raise ValidationError({"dataset": "This dataset is still importing; delete it when the import has finished."})
    _purge_rows(dataset.pk)
    dataset.delete()
    _remove_upload(dataset.upload_path)


def _remove_upload(upload_path: str) -> None:
    """Delete the upload's folder (uploads/datasets/<random>/...), nothing outside it."""
    if not upload_path:
        return
    try:
        relative = Path(upload_path).resolve().relative_to(upload_root().resolve())
    except ValueError:
        return
    shutil.rmtree(upload_root() / relative.parts[0], ignore_errors=True)


def error_summary(errors: list[dict]) -> str:
    kinds = Counter(e["message"].split(" (")[0] for e in errors)
    return "; ".join(f"{k} ×{n}" for k, n in kinds.most_common(5))


# ------------------------------------------------------------------ steps (issue 13)


def step_rule_parse(value, *, field: str = "step_rule"):
    """The user's split rule (a dict or JSON text) as rlcore's StepSplit; a bad one is a field error."""
    import json

    from pydantic import ValidationError as PydanticError

    from rlcore.steps import StepSplit as StepRule

    if value in (None, "", {}):
        return None
    if isinstance(value, str):
        try:
            value = json.loads(value) if value.strip().startswith("{") else {"kind": value.strip()}
        except ValueError as exc:
            raise ValidationError({field: f"Not JSON: {exc}."}) from None
    try:
        return StepRule.model_validate(value)
    except PydanticError as exc:
        raise pydantic_errors(exc.errors(), field=field) from None


def steps_split(*, dataset: Dataset, rule) -> dict:
    """Split every response of the dataset into steps by ``rule``: a new version per response (older
    versions, and the labels made on them, stay). All or nothing: one response the rule cannot split
    (one step, thousands) refuses the whole split, naming the row (the prompt's source line)."""
    from django.db.models import Max

    from rlcore.steps import StepError, split_steps
    from webapp.datasets.models import StepSplit, StepSplitSource

    rule = step_rule_parse(rule) if not hasattr(rule, "model_dump") else rule
    if rule is None:
        raise ValidationError({"step_rule": "Choose how to split the responses into steps."})
    rule_json = rule.model_dump(exclude_none=True)
    with transaction.atomic():
        latest = dict(StepSplit.objects.filter(response__prompt__dataset=dataset).values("response_id")
                      .annotate(v=Max("version")).values_list("response_id", "v"))
        batch, n_steps = [], 0
        # a plain fetch, not a server-side cursor: a refusal raised mid-loop must not leave one open
        rows = list(Response.objects.filter(prompt__dataset=dataset).order_by("id")
                    .values_list("id", "text", "prompt__source_line"))
        n = 0
        for response_id, text, line in rows:
            try:
                steps = split_steps(text, rule, row=line, field="response")
            except StepError as exc:
                raise ValidationError({"step_rule": f"{exc} (response {response_id}); nothing was split."}) from None
            n_steps += len(steps)
            batch.append(StepSplit(response_id=response_id, version=latest.get(response_id, 0) + 1,
                                   source=StepSplitSource.RULE, rule=rule_json,
                                   steps=[{"text": s.text, "start": s.start, "end": s.end} for s in steps]))
            if len(batch) >= BATCH_ROWS:
                StepSplit.objects.bulk_create(batch)
                n += len(batch)
                batch.clear()
        StepSplit.objects.bulk_create(batch)
        n += len(batch)
    if not n:
        raise ValidationError({"step_rule": f"Dataset '{dataset.name}' has no responses to split."})
    return {"responses": n, "steps": n_steps, "rule": rule_json}



@transaction.atomic
def stepwise_import(*, project, user, path: Path, name: str = "") -> Dataset:
    """Import a TRL stepwise file (JSONL, Parquet; ``prompt``, ``completions`` as a list of steps, ``labels``): each row a
    prompt, its response (the steps joined by a newline, each step a span of it) and a split of source "file";
    a labelled row also becomes a step item with its label (the exported grades, first wrong step, kind, rater
    and note when the file carries them, else good 1 / bad -1 from the booleans). All or nothing: a bad row
    refuses the file, naming row and field."""
    from rlcore.datasets import detect_format, read_stepwise
    from rlcore.errors import UserError
    from rlcore.steps import steps_from_list
    from webapp.datasets.models import StepSplit, StepSplitSource

    try:  # rlcore reads the format (JSONL, Parquet or an HF folder); a bad row names its row and field
        fmt = detect_format(path)
        rows = list(read_stepwise(path, fmt))
    except UserError as exc:
        raise ValidationError({"file": str(exc)}) from None
    if not rows:
        raise ValidationError({"file": f"{path.name} has no rows."})
    dataset = Dataset.objects.create(project=project, name=(name or path.name)[:200], source_format=fmt,
                                     source_name=path.name, created_by=user, status=DatasetStatus.READY,
                                     finished_at=timezone.now())
    members = dict(get_user_model().objects.filter(memberships__project=project).values_list("username", "id"))
    labelled = []
    for line_no, row in rows:
        prompt = Prompt.objects.create(dataset=dataset, source_line=line_no, text=row.prompt)
        text, steps = steps_from_list(row.steps)
        response = Response.objects.create(prompt=prompt, text=text)
        split = StepSplit.objects.create(response=response, version=1, source=StepSplitSource.FILE, steps=[
            {"text": s.text, "start": s.start, "end": s.end} for s in steps])
        if row.labels is not None:
            labelled.append((line_no, row, prompt, response, split))
    n_labels = _labels_written(step_rows_imported.send(sender=Dataset, dataset=dataset, rows=labelled,
                                                       members=members))
    Dataset.objects.filter(pk=dataset.pk).update(row_count=len(rows), response_count=len(rows), label_count=n_labels)
    dataset.refresh_from_db()
    return dataset
