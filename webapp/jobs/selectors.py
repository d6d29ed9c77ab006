import base64
import json
import math
import os
import struct
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from django.core.exceptions import ValidationError
from django.core.paginator import Page, Paginator
from django.db.models import F, FloatField, QuerySet
from django.db.models.expressions import BaseExpression
from django.db.models.fields.json import KeyTextTransform, KeyTransform
from django.db.models.functions import Cast, Length
from django.utils import timezone
from pydantic import BaseModel, ConfigDict, Field
from rlcore.analysis.checkpoint_scoring import OveroptScoreSettings
from rlcore.generation.spec import GenerationSettings
from rlcore.launch import launcher_paths
from rlcore.training.specs import GRPOSettings, PRMSettings, RewardModelSettings

from webapp.jobs.models import Job, JobSample, MetricPoint


def job_list(*, project, kind: str | None = None) -> QuerySet[Job]:
    jobs = Job.objects.filter(project=project).select_related("created_by")
    return jobs.filter(kind=kind) if kind else jobs


def job_get(*, project, job_id: int) -> Job:
    return Job.objects.get(project=project, pk=job_id)


def metric_points(*, job: Job, after_id: int = 0) -> QuerySet[MetricPoint]:
    return MetricPoint.objects.filter(job=job, pk__gt=after_id).order_by("pk")


# Values a sample can be filtered and sorted by besides its components (``component:<name>``).
SAMPLE_VALUES = {"step": "step", "reward": "total reward", "advantage": "advantage",
                 "length": "completion length (characters)"}


class SampleQuery(BaseModel):
    """What the samples browser (job page) and GET .../jobs/<id>/samples ask for: one definition for both."""

    model_config = ConfigDict(extra="ignore")

    step_min: int | None = Field(None, ge=0, description="Only samples logged at this step or later.")
    step_max: int | None = Field(None, ge=0, description="Only samples logged at this step or earlier.")
    prompt: str = Field("", max_length=500, description="Only samples whose prompt contains this text (any case).")
    same_prompt_as: int | None = Field(
        None, description="Only samples with exactly the prompt of this sample id: one prompt across steps.")
    value: str = Field("reward", description="What value_min/value_max bound: step, reward, advantage, length "
                                             "(characters of the completion) or component:<name>.")
    value_min: float | None = Field(None, description="Only samples whose value is at least this.")
    value_max: float | None = Field(None, description="Only samples whose value is at most this.")
    sort: str = Field("-step", description="step, reward, advantage, length or component:<name>; a leading '-' "
                                           "sorts high to low. Samples without the value (a non-finite reward) "
                                           "come last.")
    page: int = Field(1, ge=1, description="Page number, from 1.")
    page_size: int = Field(25, ge=1, le=200, description="Samples per page.")


@dataclass
class SamplePage:
    """One page of a job's samples and what the page rests on."""

    page: Page
    total: int  # samples the job logged
    matched: int  # of them, those the filters kept
    without_value: int  # of the matched, those lacking the sort value (listed last)
    components: list[str]
    query: SampleQuery
    same_prompt: str | None  # the prompt followed across steps, when same_prompt_as is set


def sample_components(*, job: Job) -> list[str]:
    """Reward component names of a job's samples (the trainer logs the same components at every step)."""
    latest = JobSample.objects.filter(job=job).order_by("-pk").values_list("data", flat=True).first()
    rewards = (latest or {}).get("rewards") or {}
    return sorted(rewards) if isinstance(rewards, dict) else []


def _value_expression(key: str, components: list[str], field: str) -> BaseExpression:
    if key == "step":
        return F("step")
    if key == "length":
        return Length(KeyTextTransform("completion", "data"))
    if key in ("reward", "advantage"):
        # ->> gives SQL NULL for a JSON null (a non-finite value), which sorts last and fails every bound
        return Cast(KeyTextTransform(key, "data"), FloatField())
    name = key.removeprefix("component:")
    if key.startswith("component:") and name in components:
        return Cast(KeyTextTransform(name, KeyTransform("rewards", "data")), FloatField())
    known = ", ".join([*SAMPLE_VALUES, *(f"component:{c}" for c in components)])
    raise ValidationError({field: f"{key!r} is not a value of this job's samples; use one of: {known}"})


def sample_page(*, job: Job, query: SampleQuery) -> SamplePage:
    """Filter, sort and paginate a job's sample completions in the database (a run can log many)."""
    components = sample_components(job=job)
    samples = JobSample.objects.filter(job=job)
    total = samples.count()
    same_prompt = None
    if query.same_prompt_as is not None:
        anchor = JobSample.objects.filter(job=job, pk=query.same_prompt_as).values_list("data", flat=True).first()
        if anchor is None:
            raise ValidationError({"same_prompt_as": f"job {job.pk} has no sample {query.same_prompt_as}"})
        same_prompt = anchor.get("prompt")
        samples = samples.filter(data__prompt=same_prompt)
    if query.step_min is not None:
        samples = samples.filter(step__gte=query.step_min)
    if query.step_max is not None:
        samples = samples.filter(step__lte=query.step_max)
    if query.prompt:
        samples = samples.annotate(prompt_text=KeyTextTransform("prompt", "data")).filter(
            prompt_text__icontains=query.prompt)
    if query.value_min is not None or query.value_max is not None:
        samples = samples.annotate(bounded=_value_expression(query.value, components, "value"))
        if query.value_min is not None:
            samples = samples.filter(bounded__gte=query.value_min)
        if query.value_max is not None:
            samples = samples.filter(bounded__lte=query.value_max)
    descending = query.sort.startswith("-")
    samples = samples.annotate(sort_value=_value_expression(query.sort.removeprefix("-"), components, "sort"))
    without_value = samples.filter(sort_value__isnull=True).count()
    order = F("sort_value").desc(nulls_last=True) if descending else F("sort_value").asc(nulls_last=True)
    samples = samples.order_by(order, "-pk" if descending else "pk")
    page = Paginator(samples, query.page_size).get_page(query.page)  # a page past the end shows the last one
    matched = page.paginator.count
    for sample in page.object_list:
        rewards = sample.data.get("rewards") or {}
        sample.rewards = sorted(rewards.items()) if isinstance(rewards, dict) else []
        sample.length = len(sample.data.get("completion") or "")
    return SamplePage(page=page, total=total, matched=matched, without_value=without_value,
                      components=components, query=query, same_prompt=same_prompt)


RUN_DIRECTORY_MAX_ENTRIES = 1000


@dataclass
class RunDirectory:
    """One folder of a job's output directory: where it is, and its entries (folders first)."""

    root: Path
    relative: str  # "" for the run directory itself
    entries: list[dict]
    total: int  # entries in the folder; at most RUN_DIRECTORY_MAX_ENTRIES are listed


def run_directory(*, job: Job, subpath: str = "") -> RunDirectory | None:
    """A folder inside the job's output directory, or None when ``subpath`` leaves it or is no folder.

    Resolved before the check, so ``..``, absolute paths and symlinks out of the run directory are refused;
    entries are described without following symlinks (a link's target outside is never read)."""
    if not job.output_dir:
        return None
    root = Path(job.output_dir).resolve()
    target = (root / subpath).resolve()
    if not target.is_relative_to(root) or not target.is_dir():
        return None
    found = sorted(os.scandir(target), key=lambda e: (not e.is_dir(follow_symlinks=False), e.name))
    entries = []
    for entry in found[:RUN_DIRECTORY_MAX_ENTRIES]:
        info = entry.stat(follow_symlinks=False)
        entries.append({"name": entry.name, "path": str((target / entry.name).relative_to(root)),
                        "is_dir": entry.is_dir(follow_symlinks=False), "is_link": entry.is_symlink(),
                        "size": info.st_size, "modified": datetime.fromtimestamp(info.st_mtime, tz=UTC)})
    relative = str(target.relative_to(root))
    return RunDirectory(root=root, relative="" if relative == "." else relative, entries=entries, total=len(found))


def job_eta(*, job: Job) -> str:
    """Time left at the pace so far, as text; empty when unknown."""
    if job.state != "running" or not job.started_at or not job.progress_total or job.progress_step <= 0:
        return ""
    elapsed = (timezone.now() - job.started_at).total_seconds()
    left = elapsed / job.progress_step * max(job.progress_total - job.progress_step, 0)
    minutes, seconds = divmod(int(left), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes} min" if hours else f"{minutes} min {seconds} s" if minutes else f"{seconds} s"


# Run colours on the dashboards: fixed per job id, so a run keeps its colour on its own page, on every
# compare page and across reloads. Twelve colours (Tableau 10 + two) that stay apart on white.
RUN_PALETTE = ("#4e79a7", "#f28e2b", "#e15759", "#76b7b2", "#59a14f", "#edc948",
               "#b07aa1", "#ff9da7", "#9c755f", "#5f6b7d", "#1f3fbf", "#0a8f6a")
COMPARE_MAX_RUNS = 10


def run_colour(job_id: int) -> str:
    """The colour of one run: Fibonacci hashing of its id (the top bits of id x 2^32/phi) into RUN_PALETTE,
    which spreads consecutive ids over the palette.

    >>> [run_colour(job_id) for job_id in (1, 2, 3)]
    ['#ff9da7', '#e15759', '#1f3fbf']
    """
    return RUN_PALETTE[((job_id * 2654435761) % 2**32) * len(RUN_PALETTE) >> 32]


def run_colours(job_ids: list[int]) -> dict[int, str]:
    """Colours for runs shown together: each its own ``run_colour``, unless an earlier run (lower id) took
    it, then the next free one; a run changes colour only on a page where two ids would have shared one."""
    taken: set[str] = set()
    colours: dict[int, str] = {}
    for job_id in sorted(job_ids):
        start = RUN_PALETTE.index(run_colour(job_id))
        for offset in range(len(RUN_PALETTE)):
            colour = RUN_PALETTE[(start + offset) % len(RUN_PALETTE)]
            if colour not in taken or len(taken) >= len(RUN_PALETTE):
                break
        taken.add(colour)
        colours[job_id] = colour
    return colours


# Spec fields that differ between any two runs by construction (each job has its own output folder and
# frozen data files), so listing them would bury the settings a person chose: the launchers' paths.
SPEC_FIELDS_ALWAYS_DIFFERENT = frozenset().union(*(launcher_paths(settings) for settings in (
    RewardModelSettings, PRMSettings, GRPOSettings, GenerationSettings, OveroptScoreSettings)))


def _flatten_spec(value, prefix: str = "") -> dict[str, object]:
    if isinstance(value, dict):
        flat: dict[str, object] = {}
        for key, item in value.items():
            flat.update(_flatten_spec(item, f"{prefix}.{key}" if prefix else str(key)))
        return flat
    if isinstance(value, list) and any(isinstance(item, (dict, list)) for item in value):
        flat = {}
        for index, item in enumerate(value):
            flat.update(_flatten_spec(item, f"{prefix}[{index}]"))
        return flat
    return {prefix: value}


MISSING = object()


def spec_differences(*, jobs: list[Job]) -> list[dict]:
    """The spec fields (dotted paths into nested specs, ``reward_spec.components[0].weight``) whose values
    are not the same in every job, in path order: ``[{"field", "values": [text per job, "—" if absent]}]``.
    The job kind is compared as a field too; SPEC_FIELDS_ALWAYS_DIFFERENT are left out."""
    flats = [{"kind": job.kind, **_flatten_spec(job.spec or {})} for job in jobs]
    fields = sorted({field for flat in flats for field in flat})
    rows = []
    for field in fields:
        if field.split(".")[0].split("[")[0] in SPEC_FIELDS_ALWAYS_DIFFERENT:
            continue
        values = [flat.get(field, MISSING) for flat in flats]
        if all(v == values[0] and type(v) is type(values[0]) for v in values):
            continue
        rows.append({"field": field, "values": ["—" if v is MISSING else _spec_text(v) for v in values]})
    return rows


def _spec_text(value) -> str:
    if isinstance(value, str):
        return value
    return json.dumps(value)


def metric_history_path(job: Job) -> Path:
    """Where a finished job's history text is kept (services.metric_history_keep): in the job's own folder,
    ARTIFACT_ROOT/jobs/<pk>/ (a resumed run shares its parent's output_dir, never this one), named for the row's
    creation time, state and finish time, so a file left by another database with the same ids, or by an earlier
    state of the row, is never served for it."""
    from webapp.jobs.services import job_output_dir

    finished = job.finished_at.timestamp() if job.finished_at else ""
    return job_output_dir(job) / f"metric-history.{job.created_at.timestamp()}.{job.state}.{finished}.json"


def metric_history_json(*, job: Job) -> str:
    """metric_history_text, read from the file written when the job finished (its points no longer change, and a
    compare page asks for ten of them: ~100 ms of database time each on a loaded 2-core machine, the file a
    millisecond). A running job is read from the database. A point written after the file (a reaped run whose
    child still writes) still reaches the page, from the SSE replay after ``last_id``.

    A finished job without its file (finished before files were kept, or the write failed) is read from the
    database once and kept then, so it stops costing the database too."""
    if not job.is_finished:
        return metric_history_text(job=job)
    try:
        return metric_history_path(job).read_text()
    except OSError:
        from webapp.jobs.services import metric_history_keep

        return metric_history_keep(job=job)


def metric_history_text(*, job: Job) -> str:
    """Every metric point of a job as one JSON text in columns (a dashboard's first load; the SSE stream then
    continues after ``last_id``): ``{"last_id": int, "times": [[step...], [unix time...]], "series": {name:
    [steps, values]}}`` where ``steps`` is base64 of big-endian int32s and ``values`` base64 of big-endian
    float64s, NaN where the run logged NaN or infinity (the value is null in the database); see
    history_columns for reading it in Python. Each series is in step order (a step written twice: both, the
    later one last, which is the one a chart keeps). ``times`` holds each step's first point's time once,
    not once per metric: the wall-clock axis and the CSV use that.

    Why binary: 540,000 points (10 runs x 2,000 steps x 27 metrics) as JSON numbers are 12.8 MB whose
    JSON.parse took ~500 ms of the page's main thread on the loaded 2-core machine; the exact float64 bits
    in base64 are 8.6 MB that the page decodes in a few milliseconds, and no digit is lost.

    On PostgreSQL the database builds the text from one scan of the job's rows (per-point JSON in Python
    takes seconds); elsewhere Python does the same.
    """
    from django.db import connection

    table = MetricPoint._meta.db_table
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute(
                f"""WITH points AS MATERIALIZED (SELECT id, step, name, value, created_at FROM {table} WHERE job_id = %s)
                    SELECT json_build_object(
                      'last_id', COALESCE((SELECT max(id) FROM points), 0),
                      'times', (SELECT json_build_array(COALESCE(array_agg(step ORDER BY step), '{{}}'),
                                                        COALESCE(array_agg(time ORDER BY step), '{{}}'))
                                FROM (SELECT step, round(extract(epoch FROM min(created_at))::numeric, 3) AS time
                                      FROM points GROUP BY step) AS by_step),
                      'series', COALESCE((SELECT json_object_agg(name, columns) FROM (
                          SELECT name, json_build_array(
                                   translate(encode(string_agg(int4send(step), ''::bytea ORDER BY step, id), 'base64'), E'\n', ''),
                                   translate(encode(string_agg(float8send(COALESCE(value, 'NaN')), ''::bytea ORDER BY step, id),
                                                    'base64'), E'\n', '')) AS columns
                          FROM points GROUP BY name) AS by_name), '{{}}'::json))::text""",
                [job.pk])
            return cursor.fetchone()[0]
    series: dict[str, list[list]] = {}
    times: dict[int, float] = {}
    last_id = 0
    rows = metric_points(job=job).order_by("step", "pk").values_list("pk", "step", "name", "value", "created_at")
    for pk, step, name, value, created_at in rows:
        columns = series.setdefault(name, [[], []])
        columns[0].append(step)
        columns[1].append(float("nan") if value is None else value)
        times[step] = min(times.get(step, float("inf")), round(created_at.timestamp(), 3))
        last_id = max(last_id, pk)
    packed = {name: [base64.b64encode(struct.pack(f">{len(steps)}i", *steps)).decode(),
                     base64.b64encode(struct.pack(f">{len(values)}d", *values)).decode()]
              for name, (steps, values) in series.items()}
    return json.dumps({"last_id": last_id, "times": [list(times), list(times.values())], "series": packed})


def history_columns(encoded: list[str]) -> tuple[list[int], list[float | None]]:
    """One series of metric_history_text back as (steps, values), None where NaN: what the page decodes."""
    raw_steps, raw_values = (base64.b64decode(text) for text in encoded)
    steps = list(struct.unpack(f">{len(raw_steps) // 4}i", raw_steps))
    values = [None if math.isnan(v) else v for v in struct.unpack(f">{len(raw_values) // 8}d", raw_values)]
    return steps, values


def job_notes(*, job: Job) -> list[str]:
    """What rlcore said about the run (``rlcore: ...`` lines: options chosen and why, rows dropped, warnings),
    in order, each once; the runner keeps them in the log tail even after they scroll out of it."""
    from rlcore.events import NOTE_PREFIX

    seen: dict[str, None] = {}
    for line in (job.log_tail or "").splitlines():
        if line.startswith(NOTE_PREFIX):
            seen.setdefault(line.removeprefix(NOTE_PREFIX), None)
    return list(seen)
