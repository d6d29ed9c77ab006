"""LM labelling runs: a job in which a judge labels comparisons, started from the comparisons' snapshot.

An LM labelling job is a Job (kind ``judge_labels``, queue ``default``) whose child is
``python -m rlcore judge pairwise`` (mode ``pairwise``), ``judge rank`` (mode ``ranking``) or ``judge steps``
(mode ``steps``): the webapp writes the comparisons (pairs in canonical order A/B, rankings with their
responses in canonical order, or step items with their steps), the prompt template and, for a stored key,
a key file the child deletes once read into the job's folder; the child judges every comparison (pairs
swapped, rankings reversed) and appends one JSON line per comparison to ``labels.jsonl``, which
:mod:`webapp.judging.lm_labels` turns into labels.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

from django.core.exceptions import ValidationError
from django.db import transaction

from webapp.annotation.models import Comparison, ComparisonKind
from webapp.jobs.models import Job
from webapp.judging.configs import backend_arguments, write_key_file
from webapp.judging.models import JudgeBackend, JudgeConfig, JudgePromptTemplate, LabellingMode, LMLabellingRun, \
    PromptMode
from webapp.judging.selectors import rankings_awaiting_label, step_items_awaiting_prelabel
from webapp.rubrics.selectors import annotation_rubric_for

logger = logging.getLogger(__name__)

JUDGE_LABELS_KIND = "judge_labels"
LABELS_FILE = "labels.jsonl"
PAIRS_FILE = "pairs.jsonl"
RANKINGS_FILE = "rankings.jsonl"
STEPS_FILE = "steps.jsonl"
CRITERIA_FILE = "criteria.json"


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


def default_template(mode: str) -> str:
    """The rlcore template (name@version) a run of ``mode`` uses when it names none of the project's."""
    return _MODES[mode]["default_template"]


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
    job = _whole_project_run(
        project=project, user=user, config=config, template_id=template_id, mode=LabellingMode.RANKING,
        what="ranking (rank)", waiting=rankings_awaiting_label, grade_rubric=grade_rubric,
        none_waiting="No N-way ranking comparison of this project is waiting for a label (build some with the "
                     "'ranking' strategy, or they are all labelled, held by an annotator or being ranked by a "
                     "judge now).")
    Comparison.objects.filter(pk__in=job.lm_labelling.comparison_ids).update(is_active=False)
    return job


@transaction.atomic
def lm_steps_prelabel(*, project, user, config: JudgeConfig, template_id: int | None = None) -> Job:
    """Queue a job that grades every step of the project's step items that have no LM pre-label yet and no
    run going (:func:`webapp.judging.selectors.step_items_awaiting_prelabel`). The items stay in the queue:
    a pre-label is a suggestion, and an annotator who takes an item before it arrives grades it unprompted."""
    return _whole_project_run(
        project=project, user=user, config=config, template_id=template_id, mode=LabellingMode.STEPS,
        what="step grading (steps)", waiting=step_items_awaiting_prelabel,
        none_waiting="No step item of this project is waiting for a pre-label (build step items on the Annotation "
                     "page, or they all have one or are being graded by a judge now).")


def _whole_project_run(*, project, user, config: JudgeConfig, template_id, mode: str, what: str, waiting,
                       none_waiting: str, grade_rubric: bool = False) -> Job:
    """A run over everything of the project still ``waiting`` (rankings, step items), with the checks they
    share: the project's row locked, so two clicks at once cannot both pick the same items; an open project;
    the chosen template (None: the mode's default) of this project and of the run's mode."""
    from webapp.projects.models import Project

    Project.objects.select_for_update().filter(pk=project.pk).first()
    if project.is_closed:
        raise ValidationError({"project": f"Project '{project.name}' is closed: it takes no new labels."})
    template = None
    if template_id not in (None, ""):
        template = (JudgePromptTemplate.objects.filter(project=project, pk=template_id).first()
                    if str(template_id).isdigit() else None)
        if template is None or template.mode != _MODES[mode]["template_mode"]:
            raise ValidationError({"template_id": f"Template {template_id} is not a {what} template of this "
                                                  f"project: choose one, or none for {default_template(mode)}."})
    ids = list(waiting(project=project).values_list("pk", flat=True))
    if not ids:
        raise ValidationError({"comparisons": none_waiting})
    return lm_labelling_job_create(project=project, user=user, config=config, comparison_ids=ids, template=template,
                                   mode=mode, grade_rubric=grade_rubric)

