"""Writes for LM judging: judge configs (keys encrypted), prompt template versions, LM labelling jobs
and the recording of their labels.

An LM labelling job is a Job (kind ``judge_labels``, queue ``default``) whose child is
``python -m rlcore judge pairwise`` (mode ``pairwise``) or ``judge rank`` (mode ``ranking``): the webapp
writes the comparisons (pairs in canonical order A/B, or rankings with their responses in canonical
order), the prompt template and, for a stored key, a key file the child deletes once read into the
job's folder; the child judges every comparison in both orders (swapped, or reversed) and appends one
JSON line per comparison to ``labels.jsonl``.
:func:`lm_labels_record` turns those lines into PreferenceLabels (source ``lm``) as they come: a
pair without a verdict gets no label, only an LMLabelAttempt with the reason; when the job ends,
every pair it did not reach gets one too. Then ``lm_labelling_finished`` tells the router which
comparisons have labels and which must go back to people.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from urllib.parse import urlparse

import django.dispatch
from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import transaction
from django.db.models import Max

from rlcore.judges.outcomes import NO_LABEL, line_outcome
from webapp.annotation.models import Choice, Comparison, ComparisonKind
from webapp.jobs.models import FINISHED_STATES, Job, JobState
from webapp.judging.models import (
    AttemptStatus, JudgeBackend, JudgeConfig, JudgePromptTemplate, LabellingMode, LMLabelAttempt, LMLabellingRun,
    PromptMode,
)
from webapp.judging.secrets import decrypt_api_key, encrypt_api_key

logger = logging.getLogger(__name__)

JUDGE_LABELS_KIND = "judge_labels"
LABELS_FILE = "labels.jsonl"
PAIRS_FILE = "pairs.jsonl"
RANKINGS_FILE = "rankings.jsonl"
STEPS_FILE = "steps.jsonl"
CRITERIA_FILE = "criteria.json"
KEY_FILE = "api-key"
MAX_CONCURRENCY = 256
# A connection test shows at most this much of the model's answer (never a non-judge body: rlcore drops those).
REPLY_SHOWN_CHARS = 200
ENV_NAME_CHARS = set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_")

# Sent once per labelling run when every comparison in it has an outcome:
# labelled: [comparison id], failed: {comparison id: reason}.
lm_labelling_finished = django.dispatch.Signal()


# ------------------------------------------------------------------ judge configs


def _clean_config(*, backend: str, endpoint: str, model: str, max_concurrency: int, timeout_s: float,
                  max_retries: int, api_key_env: str) -> dict:
    errors: dict[str, str] = {}
    if backend not in JudgeBackend.values:
        errors["backend"] = f"Unknown backend '{backend}': choose one of {', '.join(JudgeBackend.values)}."
    endpoint = (endpoint or "").strip()
    if backend == JudgeBackend.OPENAI:
        parsed = urlparse(endpoint)
        if parsed.scheme not in ("http", "https") or not parsed.netloc:
            errors["endpoint"] = ("Give the endpoint's API root as an http(s) URL, e.g. http://127.0.0.1:8000/v1 "
                                  f"(got '{endpoint}').")
    if not (model or "").strip():
        errors["model"] = "Give the model name at the endpoint (or, for a local model, its folder)."
    if not 1 <= int(max_concurrency) <= MAX_CONCURRENCY:
        errors["max_concurrency"] = f"Concurrency must be between 1 and {MAX_CONCURRENCY} requests in flight."
    if not 0 < float(timeout_s) <= 3600:
        errors["timeout_s"] = "The timeout must be above 0 and at most 3600 seconds."
    if not 0 <= int(max_retries) <= 20:
        errors["max_retries"] = "Retries must be between 0 and 20."
    api_key_env = (api_key_env or "").strip()
    if api_key_env and (problem := key_env_problem(api_key_env)):
        errors["api_key_env"] = problem
    if errors:
        raise ValidationError(errors)
    return {"backend": backend, "endpoint": endpoint, "model": model.strip(), "max_concurrency": int(max_concurrency),
            "timeout_s": float(timeout_s), "max_retries": int(max_retries), "api_key_env": api_key_env}


def key_env_problem(name: str) -> str | None:
    """Why a judge may not read its API key from environment variable ``name``, or None.

    Only variables the operator lists in JUDGE_KEY_ENV_ALLOWLIST: the key is sent as a bearer token
    to the endpoint the designer chose, so naming DATABASE_URL or SECRET_KEY would hand it over.
    """
    if not set(name) <= ENV_NAME_CHARS or name[0].isdigit():
        return "An environment variable name has letters, digits and _ only (e.g. JUDGE_API_KEY)."
    allowed = settings.JUDGE_KEY_ENV_ALLOWLIST
    if name not in allowed:
        listed = f"one of {', '.join(allowed)}" if allowed else "none is allowed on this server"
        return (f"{name} is not a judge key variable the operator allows ({listed}; JUDGE_KEY_ENV_ALLOWLIST). "
                "Paste the key instead: it is stored encrypted.")
    return None


def api_key_problem(key: str) -> str | None:
    """Why ``key`` cannot be sent as a bearer token, or None: HTTP headers carry ASCII only, and a key with
    other characters used to fail with a 500 when the judge was first called."""
    if not key.isascii() or not key.isprintable():
        return "An API key has printable ASCII characters only; paste it again without other characters."
    return None


def _check_local_model(project, backend: str, model: str) -> None:
    # A local judge is a folder the workers load: one this project may use (its registry, MODEL_ROOTS).
    if backend == JudgeBackend.LOCAL_HF and (model or "").strip():
        from webapp.training.model_locations import model_location_problem

        if problem := model_location_problem(project=project, location=model.strip()):
            raise ValidationError({"model": problem})


@transaction.atomic
def judge_config_create(*, project, user, name: str, model: str, backend: str = JudgeBackend.OPENAI,
                        endpoint: str = "", max_concurrency: int = 8, timeout_s: float = 60.0, max_retries: int = 4,
                        api_key: str = "", api_key_env: str = "") -> JudgeConfig:
    name = (name or "").strip()
    if not name:
        raise ValidationError({"name": "Give the judge a name."})
    if api_key and (problem := api_key_problem(api_key.strip())):
        raise ValidationError({"api_key": problem})
    if JudgeConfig.objects.filter(project=project, name=name).exists():
        raise ValidationError({"name": f"A judge named '{name}' already exists in this project."})
    _check_local_model(project, backend, model)
    fields = _clean_config(backend=backend, endpoint=endpoint, model=model, max_concurrency=max_concurrency,
                           timeout_s=timeout_s, max_retries=max_retries, api_key_env=api_key_env)
    return JudgeConfig.objects.create(project=project, name=name, created_by=user,
                                      api_key_encrypted=encrypt_api_key(api_key.strip()) if api_key.strip() else "",
                                      **fields)


@transaction.atomic
def judge_config_update(*, config: JudgeConfig, api_key: str | None = None, clear_api_key: bool = False,
                        **changes) -> JudgeConfig:
    """Change a config; ``api_key`` None or empty keeps the stored key, ``clear_api_key`` drops it."""
    current = {f: getattr(config, f) for f in ("backend", "endpoint", "model", "max_concurrency", "timeout_s",
                                                "max_retries", "api_key_env")}
    unknown = set(changes) - set(current) - {"name"}
    if unknown:
        raise ValidationError({sorted(unknown)[0]: "Not a judge setting."})
    if "name" in changes:
        name = (changes.pop("name") or "").strip()
        if not name:
            raise ValidationError({"name": "Give the judge a name."})
        if JudgeConfig.objects.filter(project=config.project, name=name).exclude(pk=config.pk).exists():
            raise ValidationError({"name": f"A judge named '{name}' already exists in this project."})
        config.name = name
    merged = {**current, **{k: v for k, v in changes.items() if v is not None}}
    _check_local_model(config.project, merged["backend"], merged["model"])
    fields = _clean_config(**merged)
    for field, value in fields.items():
        setattr(config, field, value)
    if clear_api_key:
        config.api_key_encrypted = ""
    elif api_key and api_key.strip():
        if problem := api_key_problem(api_key.strip()):
            raise ValidationError({"api_key": problem})
        config.api_key_encrypted = encrypt_api_key(api_key.strip())
    config.save()
    return config


def _stored_key(config: JudgeConfig) -> str | None:
    if not config.api_key_encrypted:
        return None
    key = decrypt_api_key(config.api_key_encrypted)
    if key is None:
        raise ValidationError({"api_key": f"The stored API key of judge '{config.name}' cannot be decrypted "
                                          "(SECRET_KEY changed?): enter it again."})
    return key


def backend_arguments(config: JudgeConfig) -> tuple[list[str], str | None]:
    """The rlcore options that reach a judge's backend, and the API key to hand over in KEY_FILE
    (never on the command line); shared by every job that talks to a judge."""
    key = _stored_key(config)
    argv = ["--model", config.model, "--max-concurrency", str(config.max_concurrency),
            "--timeout", str(config.timeout_s), "--max-retries", str(config.max_retries)]
    if config.backend == JudgeBackend.LOCAL_HF:
        return argv + ["--local"], None
    argv += ["--endpoint", config.endpoint]
    if key:
        argv += ["--api-key-file", KEY_FILE]
    elif config.api_key_env:
        argv += ["--api-key-env", _allowed_key_env(config)]
    return argv, key


def _allowed_key_env(config: JudgeConfig) -> str:
    # Checked again on use: the allow-list may have shrunk since the judge was saved.
    if problem := key_env_problem(config.api_key_env):
        raise ValidationError({"api_key_env": f"Judge '{config.name}': {problem}"})
    return config.api_key_env


def write_key_file(folder: Path, key: str | None) -> None:
    """The key for the child, readable by this user only; the child deletes it once read."""
    if key:
        fd = os.open(folder / KEY_FILE, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(key)


def _judge_in_request(config: JudgeConfig, *, max_concurrency: int, timeout_cap_s: float, **settings):
    """An OpenAI-compatible judge the web process may call during a request: one attempt per question,
    each at most ``timeout_cap_s``. (Local models are loaded by workers only, never by the web process.)"""
    from pydantic import SecretStr

    from rlcore.judges.openai_compat import OpenAICompatJudge, OpenAICompatSettings

    key = _stored_key(config)
    return OpenAICompatJudge(OpenAICompatSettings(
        base_url=config.endpoint, model=config.model, api_key=SecretStr(key) if key else None,
        api_key_env=None if key or not config.api_key_env else _allowed_key_env(config), max_concurrency=max_concurrency,
        timeout_s=min(config.timeout_s, timeout_cap_s), max_retries=0, **settings))


def preview_judge(*, config: JudgeConfig):
    """The judge that grades rule-less criteria in a rubric's live preview (a few responses, now)."""
    if config.backend == JudgeBackend.LOCAL_HF:
        raise ValidationError({"judge_config": f"'{config.name}' is a local model, which only workers load; "
                                               "preview with an OpenAI-compatible judge (a local vLLM server works)."})
    from rlcore.errors import UserError

    try:
        return _judge_in_request(config, max_concurrency=config.max_concurrency, timeout_cap_s=20.0)
    except UserError as exc:
        raise ValidationError({"judge_config": str(exc)}) from None


def judge_config_test(*, config: JudgeConfig) -> dict:
    """Ask the judge one small question now; {"ok": bool, "message": str, "reply": str | None}.

    One attempt, no retries, at most 15 seconds: a connection test, not a labelling run.
    """
    if config.backend == JudgeBackend.LOCAL_HF:
        from webapp.training.model_locations import model_location_problem

        if problem := model_location_problem(project=config.project, location=config.model):
            return {"ok": False, "reply": None, "message": problem}
        return {"ok": True, "reply": None,
                "message": f"Found a model folder at {config.model} (it is loaded by the worker)."}
    from rlcore.errors import UserError
    from rlcore.judges.base import PairRequest

    try:
        judge = _judge_in_request(config, max_concurrency=1, timeout_cap_s=15.0, max_tokens=64)
        verdict = judge.compare([PairRequest(prompt="What is 2 + 2?", response_a="4", response_b="5")])[0]
    except UserError as exc:
        return {"ok": False, "message": str(exc), "reply": None}
    if verdict.raw_reply is None:
        return {"ok": False, "reply": None,
                "message": f"Could not get a reply from {config.endpoint} (model {config.model}): {verdict.error}"}
    if verdict.verdict is None:
        return {"ok": True, "reply": verdict.raw_reply[:REPLY_SHOWN_CHARS],
                "message": f"The endpoint answered, but the reply has no verdict ({verdict.error}); "
                           "check the model or the prompt template."}
    return {"ok": True, "reply": verdict.raw_reply[:REPLY_SHOWN_CHARS],
            "message": f"The endpoint answered with a verdict ({verdict.verdict})."}


def judge_config_delete(*, config: JudgeConfig) -> str:
    """Remove a judge and its stored key for good; returns its name.

    What it labelled stays: LM labels keep the model in `model_version` and the judge's name in their
    provenance; runs and routing plans that used it show no judge from now on. A job already
    running finishes with the arguments (and key file) it was launched with.
    """
    name = config.name
    config.delete()
    return name


# ------------------------------------------------------------------ prompt templates


def template_problems(*, name: str, mode: str, text: str) -> list[str]:
    from rlcore.judges.prompts import JudgePromptTemplate as Contract

    return Contract(name=name or "template", mode=mode, text=text).problems()


@transaction.atomic
def template_save(*, project, user, name: str, text: str, mode: str = PromptMode.COMPARE) -> JudgePromptTemplate:
    """Save a new version of the template `name` (version 1 if new). Unchanged text saves nothing."""
    name = (name or "").strip()
    errors = {}
    if not name:
        errors["name"] = "Give the template a name."
    elif "/" in name or "\\" in name or not name.isprintable():
        # the name is a URL segment of the Judges page and the API; a '/' in it broke both
        errors["name"] = "A template name cannot contain '/', '\\' or control characters."
    if mode not in PromptMode.values:
        errors["mode"] = f"Unknown mode '{mode}': choose one of {', '.join(PromptMode.values)}."
    if not (text or "").strip():
        errors["text"] = "The template is empty."
    if errors:
        raise ValidationError(errors)
    problems = template_problems(name=name, mode=mode, text=text)
    if problems:
        raise ValidationError({"text": problems})
    # Lock the name's versions so two editors saving at once get versions n+1 and n+2, not a clash.
    versions = JudgePromptTemplate.objects.select_for_update().filter(project=project, name=name)
    latest = versions.order_by("-version").first()
    if latest is not None:
        if latest.mode != mode:
            raise ValidationError({"mode": f"Template '{name}' is a {latest.mode} template; keep its mode or "
                                           "use another name."})
        if latest.text == text:
            return latest
    version = (versions.aggregate(m=Max("version"))["m"] or 0) + 1
    return JudgePromptTemplate.objects.create(project=project, name=name, mode=mode, version=version, text=text,
                                              created_by=user)


def template_delete(*, project, name: str) -> int:
    """Remove every version of the template `name`; returns how many (0: no such template). Runs and
    plans that used it keep their labels (the template's name@version is in each label's provenance)."""
    deleted, _ = JudgePromptTemplate.objects.filter(project=project, name=name).delete()
    return deleted


# ------------------------------------------------------------------ LM labelling jobs


def _prompt_text(prompt) -> str:
    return prompt.text


def _response_texts(comparisons: list[Comparison]) -> dict[int, str]:
    from webapp.datasets.models import Response

    response_ids = {rid for c in comparisons for rid in c.response_ids}
    return dict(Response.objects.filter(pk__in=response_ids).values_list("id", "text"))


def pairs_snapshot(comparisons: list[Comparison]) -> list[dict]:
    """One line per pairwise comparison, responses in canonical order (A = response_ids[0])."""
    texts = _response_texts(comparisons)
    return [{"id": str(c.pk), "prompt": _prompt_text(c.prompt), "response_a": texts.get(c.response_ids[0], ""),
             "response_b": texts.get(c.response_ids[1], "")} for c in comparisons]


def rankings_snapshot(comparisons: list[Comparison]) -> list[dict]:
    """One line per N-way comparison, responses in canonical order (index i = response_ids[i])."""
    texts = _response_texts(comparisons)
    return [{"id": str(c.pk), "prompt": _prompt_text(c.prompt),
             "responses": [texts.get(rid, "") for rid in c.response_ids]} for c in comparisons]


def steps_snapshot(comparisons: list[Comparison]) -> list[dict]:
    """One line per step item: its prompt, the steps of the split it shows, and its scale."""
    from webapp.datasets.models import StepSplit

    steps = dict(StepSplit.objects.filter(pk__in=[c.step_split_id for c in comparisons]).values_list("id", "steps"))
    return [{"id": str(c.pk), "prompt": _prompt_text(c.prompt),
             "steps": [s["text"] for s in steps.get(c.step_split_id) or []], "scale": c.step_scale or "ternary"}
            for c in comparisons]


# What differs between the modes: which comparisons, which rlcore command, input file, template mode.
_MODES = {
    LabellingMode.PAIRWISE: {"kind": ComparisonKind.PAIR, "command": "pairwise", "input": PAIRS_FILE,
                             "template_mode": PromptMode.COMPARE, "snapshot": pairs_snapshot,
                             "default_template": "default-compare@1", "what": "pairwise"},
    LabellingMode.RANKING: {"kind": ComparisonKind.RANKING, "command": "rank", "input": RANKINGS_FILE,
                            "template_mode": PromptMode.RANK, "snapshot": rankings_snapshot,
                            "default_template": "default-rank@1", "what": "N-way ranking"},
    LabellingMode.STEPS: {"kind": ComparisonKind.STEPS, "command": "steps", "input": STEPS_FILE,
                          "template_mode": PromptMode.STEPS, "snapshot": steps_snapshot,
                          "default_template": "default-steps@1", "what": "step"},
}


@transaction.atomic
def lm_labelling_job_create(*, project, user, config: JudgeConfig, comparison_ids: list[int],
                            template: JudgePromptTemplate | None = None,
                            mode: str = LabellingMode.PAIRWISE, grade_rubric: bool = False) -> Job:
    """Queue a job that labels these comparisons with the judge: pairs in both orders (mode ``pairwise``),
    or N-way comparisons ranked as given and reversed (mode ``ranking``). With ``grade_rubric``, the judge
    also grades every response on the judge-graded criteria of the project's annotation rubric."""
    from webapp.jobs.services import job_create

    if mode not in _MODES:
        raise ValidationError({"mode": f"Unknown labelling mode '{mode}': choose one of "
                                       f"{', '.join(LabellingMode.values)}."})
    how = _MODES[mode]
    if config.project_id != project.pk:
        raise ValidationError({"judge_config": "That judge belongs to another project."})
    if template is not None and (template.project_id != project.pk or template.mode != how["template_mode"]):
        raise ValidationError({"template": f"Choose a {how['template_mode'].label.lower()} ({how['template_mode']}) "
                                           "template of this project."})
    comparisons = list(Comparison.objects.select_related("prompt")
                       .filter(project=project, pk__in=comparison_ids, kind=how["kind"]).order_by("id"))
    if not comparisons:
        raise ValidationError({"comparison_ids": f"No {how['what']} comparisons of this project to label."})
    backend_argv, key = backend_arguments(config)
    if config.backend == JudgeBackend.OPENAI and not key and config.api_key_env and not os.environ.get(
            config.api_key_env):
        logger.info("judge %s: %s is not set here; the worker must have it", config.pk, config.api_key_env)
    argv = ["judge", how["command"], "--input", how["input"], "--output", LABELS_FILE, *backend_argv]
    if template is not None:
        argv += ["--templates", "templates.json"]
    rubric_version, criteria = _rubric_to_grade(project) if grade_rubric else (None, [])
    if rubric_version is not None and mode != LabellingMode.STEPS:
        argv += ["--rubric", CRITERIA_FILE]
    spec = {"judge_config_id": config.pk, "judge": config.name, "model": config.model, "mode": mode,
            "template": str(template) if template else how["default_template"], "n_pairs": len(comparisons),
            "rubric": str(rubric_version) if rubric_version else None}
    title = {LabellingMode.PAIRWISE: f"LM labels: {len(comparisons)} comparisons by {config.name}",
             LabellingMode.RANKING: f"LM rankings: {len(comparisons)} comparisons by {config.name}",
             LabellingMode.STEPS: f"LM step pre-labels: {len(comparisons)} step items by {config.name}"}[mode]
    job = job_create(project=project, user=user, kind=JUDGE_LABELS_KIND, argv=argv, spec=spec, queue="default",
                     title=title)
    # The job is enqueued on commit, so its files are in place before a worker can start it.
    folder = Path(job.output_dir)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / how["input"]).write_text("".join(json.dumps(row, ensure_ascii=False) + "\n"
                                               for row in how["snapshot"](comparisons)), encoding="utf-8")
    if template is not None:
        (folder / "templates.json").write_text(json.dumps(
            {template.mode: {"name": template.name, "version": template.version, "mode": template.mode,
                             "text": template.text}}), encoding="utf-8")
    if criteria:
        (folder / CRITERIA_FILE).write_text(json.dumps(criteria, ensure_ascii=False), encoding="utf-8")
    write_key_file(folder, key)
    LMLabellingRun.objects.create(job=job, project=project, judge_config=config, template=template, mode=mode,
                                  rubric_version=rubric_version, comparison_ids=[c.pk for c in comparisons])
    return job


def _rubric_to_grade(project):
    """The annotation rubric's latest version and its criteria a judge grades (those without a rule)."""
    from webapp.rubrics.selectors import annotation_rubric_for

    version = annotation_rubric_for(project)
    if version is None:
        raise ValidationError({"grade_rubric": "This project has no annotation rubric to grade on: mark one "
                                               "'use for annotation' on the Rubrics page."})
    criteria = [{"name": c["name"], "description": c.get("description", ""), "scale_min": c.get("scale_min", 0.0),
                 "scale_max": c.get("scale_max", 1.0)}
                for c in version.definition.get("criteria", []) if not c.get("rule")]
    if not criteria:
        raise ValidationError({"grade_rubric": f"Rubric {version} has no criterion for a judge to grade "
                                               "(all of them are rules)."})
    return version, criteria


@transaction.atomic
def lm_rankings_label(*, project, user, config: JudgeConfig, template_id: int | None = None,
                      grade_rubric: bool = False) -> Job:
    """Queue a job that ranks every N-way comparison of the project still waiting for a label
    (:func:`webapp.judging.selectors.rankings_awaiting_label`). They leave the annotation queue while
    the judge works; those it cannot rank come back to it when the job ends, with the reason recorded."""
    from webapp.judging.selectors import rankings_awaiting_label

    template = _start_whole_project_run(project=project, template_id=template_id, mode=PromptMode.RANK,
                                        what="ranking (rank)", default="default-rank@1")
    ids = list(rankings_awaiting_label(project=project).values_list("pk", flat=True))
    if not ids:
        raise ValidationError({"comparisons": "No N-way ranking comparison of this project is waiting for a "
                                              "label (build some with the 'ranking' strategy, or they are all "
                                              "labelled, held by an annotator or being ranked by a judge now)."})
    job = lm_labelling_job_create(project=project, user=user, config=config, comparison_ids=ids,
                                  template=template, mode=LabellingMode.RANKING, grade_rubric=grade_rubric)
    Comparison.objects.filter(pk__in=ids).update(is_active=False)
    return job


def _start_whole_project_run(*, project, template_id, mode: str, what: str, default: str):
    """Checks shared by the runs that take everything of the project still waiting (rankings, step items):
    the project's row locked, so two clicks at once cannot both pick the same items; an open project; the
    chosen template (None: the default) of this project and of the run's mode."""
    from webapp.projects.models import Project

    Project.objects.select_for_update().filter(pk=project.pk).first()
    if project.is_closed:
        raise ValidationError({"project": f"Project '{project.name}' is closed: it takes no new labels."})
    if template_id in (None, ""):
        return None
    template = (JudgePromptTemplate.objects.filter(project=project, pk=template_id).first()
                if str(template_id).isdigit() else None)
    if template is None or template.mode != mode:
        raise ValidationError({"template_id": f"Template {template_id} is not a {what} template of this project: "
                                              f"choose one, or none for {default}."})
    return template


@transaction.atomic
def lm_steps_prelabel(*, project, user, config: JudgeConfig, template_id: int | None = None) -> Job:
    """Queue a job that grades every step of the project's step items that have no LM pre-label yet and no
    run going (:func:`webapp.judging.selectors.step_items_awaiting_prelabel`). The items stay in the queue:
    a pre-label is a suggestion, and an annotator who takes an item before it arrives grades it unprompted."""
    from webapp.judging.selectors import step_items_awaiting_prelabel

    template = _start_whole_project_run(project=project, template_id=template_id, mode=PromptMode.STEPS,
                                        what="step grading (steps)", default="default-steps@1")
    ids = list(step_items_awaiting_prelabel(project=project).values_list("pk", flat=True))
    if not ids:
        raise ValidationError({"comparisons": "No step item of this project is waiting for a pre-label (build step "
                                              "items on the Annotation page, or they all have one or are being "
                                              "graded by a judge now)."})
    return lm_labelling_job_create(project=project, user=user, config=config, comparison_ids=ids, template=template,
                                   mode=LabellingMode.STEPS)


def _record_step_prelabel(row: dict, run: LMLabellingRun, comparison: Comparison, model_version: str):
    """A ``judge steps`` line as a StepLabel of kind lm; None (with the reason) when it cannot be one."""
    from webapp.annotation.services import step_lm_label_create

    if row.get("grades") is None:
        return None, row.get("error") or "the judge graded no step"
    provenance = {**_provenance(row, run), "scale": row.get("scale"),
                  "steps": [{k: s.get(k) for k in ("score", "confidence", "error", "rendered_prompt", "raw_reply")}
                            for s in row.get("steps") or []]}
    try:
        label = step_lm_label_create(comparison=comparison, grades=row["grades"], first_error=row.get("first_error"),
                                     model_version=model_version, provenance=provenance, judge_template=run.template)
    except ValidationError as exc:  # e.g. the item's split no longer has that many steps
        return None, " ".join(exc.messages)
    return label, ""


_CHOICE = {"A": "a", "B": "b", "tie": "tie"}


def _order(result: dict) -> dict:
    return {k: result.get(k) for k in ("rendered_prompt", "raw_reply", "verdict", "strength", "confidence", "error")}


def _provenance(row: dict, run: LMLabellingRun) -> dict:
    return {
        "judge": row.get("judge"), "judge_config": run.judge_config.name if run.judge_config else None,
        "template": str(run.template) if run.template else _MODES[run.mode]["default_template"],
        "job_id": run.job_id, "mode": run.mode, "confidence": row.get("confidence"),
        "position_bias": row.get("position_bias"),
    }


def _pair_label(row: dict, run: LMLabellingRun, comparison: Comparison) -> dict | None:
    verdict = row.get("verdict")
    if verdict not in _CHOICE:
        return None
    return {"choice": _CHOICE[verdict], "strength": min(int(row.get("strength") or 1), 2), "provenance": {
        **_provenance(row, run),
        "forward_verdict": row.get("forward_verdict"), "swapped_verdict": row.get("swapped_verdict"),
        "confidence_source": row.get("confidence_source"), "label_probabilities": row.get("label_probabilities"),
        "judge_strength": row.get("strength"),
        "orders": {"ab": _order(row.get("forward") or {}), "ba": _order(row.get("swapped") or {})},
    }}


def _ranking_label(row: dict, run: LMLabellingRun, comparison: Comparison) -> dict | None:
    """Indices best first -> response ids best first; a ranking that is not a permutation of the
    comparison's responses is no label."""
    ids = list(comparison.response_ids)

    def as_ids(order):
        if not isinstance(order, list) or sorted(order) != list(range(len(ids))):
            return None
        return [ids[i] for i in order]

    ranking = as_ids(row.get("verdict"))
    if ranking is None:
        return None
    return {"choice": Choice.RANKING, "ranking": ranking, "strength": 1, "provenance": {
        **_provenance(row, run),
        "forward_verdict": as_ids(row.get("forward_verdict")), "reversed_verdict": as_ids(row.get("reversed_verdict")),
        "orders": {"given": _order(row.get("forward") or {}), "reversed": _order(row.get("reversed") or {})},
    }}


_LABEL_FROM_ROW = {LabellingMode.PAIRWISE: _pair_label, LabellingMode.RANKING: _ranking_label}


def _with_criterion_scores(fields: dict, row: dict, run: LMLabellingRun, comparison: Comparison) -> dict:
    """Add the rubric grades of a run that asked for them: ``criterion_scores`` {response id: {criterion:
    score}} with the scores the judge gave (a criterion it could not grade has none), every grade with its
    prompt, reply and error in ``provenance["criteria"]``."""
    graded = row.get("criterion_scores")
    if run.rubric_version_id is None or not isinstance(graded, list):
        return fields
    scores: dict[str, dict[str, float]] = {}
    grades: dict[str, dict] = {}
    for rid, per_criterion in zip(comparison.response_ids, graded):
        for name, grade in (per_criterion or {}).items():
            grades.setdefault(str(rid), {})[name] = grade
            if isinstance(grade, dict) and isinstance(grade.get("score"), (int, float)):
                scores.setdefault(str(rid), {})[name] = float(grade["score"])
    return {**fields, "criterion_scores": scores, "rubric_version": run.rubric_version,
            "provenance": {**fields["provenance"], "rubric": str(run.rubric_version), "criteria": grades}}


def _read_complete_lines(path: Path, offset: int) -> tuple[list[dict], int]:
    """The JSON lines written after byte `offset`, and the offset after the last complete one (a
    line still being written is left for the next read)."""
    try:
        with path.open("rb") as handle:
            handle.seek(offset)
            data = handle.read()
    except FileNotFoundError:
        return [], offset
    end = data.rfind(b"\n") + 1
    rows = []
    for line in data[:end].splitlines():
        try:
            rows.append(json.loads(line))
        except ValueError:
            continue
    return rows, offset + end


def lm_labels_record(*, job: Job) -> LMLabellingRun | None:
    """Record what the job's judge has written so far (idempotent: each comparison once per run).

    When the job has finished, comparisons with no line get an attempt with the job's error, and
    ``lm_labelling_finished`` is sent (once). A ranking run's comparisons without a label go back to
    the annotation queue as soon as their failure is recorded.
    """
    from webapp.annotation.services import lm_label_create

    finished_now = None
    with transaction.atomic():
        run = (LMLabellingRun.objects.select_for_update(of=("self",))
               .select_related("judge_config", "template", "project", "rubric_version__rubric")
               .filter(job=job).first())
        if run is None or run.finished:
            return run
        job.refresh_from_db(fields=["state", "error", "output_dir"])
        done = set(LMLabelAttempt.objects.filter(run=run).values_list("comparison_id", flat=True))
        wanted = set(run.comparison_ids)
        comparisons = Comparison.objects.select_related("project").in_bulk(wanted)
        model_version = f"{run.judge_config.model if run.judge_config else job.spec.get('model', '')}"
        rows, run.bytes_read = _read_complete_lines(Path(job.output_dir) / LABELS_FILE, run.bytes_read)
        failed_now = []
        for row in rows:
            try:
                cid = int(row.get("request_id"))
            except (TypeError, ValueError):
                continue
            if cid in done or cid not in wanted or cid not in comparisons:
                continue
            done.add(cid)
            outcome = line_outcome(row, run.mode)
            if run.mode == LabellingMode.STEPS:
                step_label, reason = _record_step_prelabel(row, run, comparisons[cid], model_version[:200])
                LMLabelAttempt.objects.create(
                    run=run, comparison_id=cid, step_label=step_label, reason=reason[:4000],
                    status=AttemptStatus.LABELLED if step_label else AttemptStatus.FAILED,
                    outcome=outcome if step_label or outcome in NO_LABEL else "unparseable")
                run.n_labelled += step_label is not None
                run.n_failed += step_label is None
                continue
            fields = None if row.get("error") else _LABEL_FROM_ROW[run.mode](row, run, comparisons[cid])
            if fields is not None:
                fields = _with_criterion_scores(fields, row, run, comparisons[cid])
                label = lm_label_create(comparison=comparisons[cid], model_version=model_version[:200], **fields)
                LMLabelAttempt.objects.create(run=run, comparison_id=cid, status=AttemptStatus.LABELLED, label=label,
                                              outcome=outcome)
                run.n_labelled += 1
            else:
                reason = row.get("error") or ("no verdict" if row.get("verdict") is None else
                                              f"the judge's verdict {row.get('verdict')!r} does not fit the comparison")
                LMLabelAttempt.objects.create(run=run, comparison_id=cid, status=AttemptStatus.FAILED,
                                              reason=str(reason)[:4000],
                                              outcome=outcome if outcome in NO_LABEL else "unparseable")
                run.n_failed += 1
                failed_now.append(cid)
        if job.state in FINISHED_STATES:
            why = {JobState.SUCCEEDED: "the judge wrote no result for it",
                   JobState.CANCELLED: "the labelling job was cancelled before reaching it"}.get(
                job.state, f"the labelling job failed before reaching it: {(job.error or '').strip()[-500:]}")
            for cid in sorted(wanted - done):
                if cid in comparisons:
                    LMLabelAttempt.objects.create(run=run, comparison_id=cid, status=AttemptStatus.FAILED, reason=why,
                                                  outcome="not_judged")
                    run.n_failed += 1
                    failed_now.append(cid)
            run.finished = True
            finished_now = run
        if run.mode == LabellingMode.RANKING and failed_now:
            # Back to people at once (lm_rankings_label took them out of the queue); a routing plan's
            # pairs go back through lm_labelling_finished, which also updates the plan.
            Comparison.objects.filter(pk__in=failed_now).update(is_active=True)
        run.save(update_fields=["n_labelled", "n_failed", "finished", "bytes_read"])
    # A steps run's items never left the queue, so there is nothing for the router to send back.
    if finished_now is not None and finished_now.mode != LabellingMode.STEPS:
        attempts = LMLabelAttempt.objects.filter(run=finished_now)
        lm_labelling_finished.send(
            sender=LMLabellingRun, run=finished_now,
            labelled=[a.comparison_id for a in attempts if a.status == AttemptStatus.LABELLED],
            failed={a.comparison_id: a.reason for a in attempts if a.status == AttemptStatus.FAILED})
    return run


def on_job_succeeded(sender, job: Job, **kwargs) -> None:
    if job.kind != JUDGE_LABELS_KIND:
        return
    try:
        lm_labels_record(job=job)
    except Exception:  # the job itself succeeded; the page's reconcile records it on the next look
        logger.exception("could not record the LM labels of job %s", job.pk)


def lm_runs_reconcile(*, project) -> int:
    """Record labels of the project's unfinished runs: those still running (labels so far) and those
    whose job failed or was cancelled (no signal for those). Pages and the API call it on load."""
    n = 0
    for run in LMLabellingRun.objects.select_related("job").filter(project=project, finished=False):
        if run.job.state != JobState.QUEUED:
            lm_labels_record(job=run.job)
            n += 1
    return n


def lm_runs_reconcile_all() -> int:
    """Every project's unfinished runs (the beat task `judging.record_lm_labels`)."""
    n = 0
    for job in Job.objects.filter(lm_labelling__finished=False).exclude(state=JobState.QUEUED):
        try:
            lm_labels_record(job=job)
            n += 1
        except Exception:  # one broken run must not stop the others
            logger.exception("could not record the LM labels of job %s", job.pk)
    return n



def remove_key_file(sender, job, **kwargs) -> None:
    """A judge's API key file never outlives its job: the child deletes it once read, and this
    removes it whatever happened (cancelled before the child started, crashed before reading)."""
    if job.output_dir:
        (Path(job.output_dir) / KEY_FILE).unlink(missing_ok=True)
