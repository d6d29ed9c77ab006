"""Prompt category tags from an LM, for the routing feature ``category=<name>``.

A tagging job is a Job (kind ``tag_prompts``, queue ``default``) whose child is ``python -m rlcore
routing tag``: the webapp writes the project's prompts (``prompts.jsonl``: id, prompt) and, for a judge
config with a stored key, the same key file the LM labelling jobs use (the child deletes it once read;
the key never goes on the command line). When the job succeeds, :func:`record_prompt_tags` stores one
:class:`~webapp.routing.models.PromptTag` per prompt (the latest job wins): its tags, or none and the
reason. Routing plans merge these tags with the prompt metadata's category/topic/tag.
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from pathlib import Path

from django.core.exceptions import ValidationError
from django.db import transaction

from webapp.jobs.models import Job, Queue
from webapp.jobs.services import job_create
from webapp.judging.models import JudgeConfig
from webapp.judging.configs import backend_arguments, write_key_file
from webapp.routing.models import PromptTag

logger = logging.getLogger(__name__)

TAG_KIND = "tag_prompts"
PROMPTS_FILE = "prompts.jsonl"
TAGS_FILE = "tags.jsonl"
DEFAULT_CATEGORIES = "math, code, writing, safety, other"


def project_prompts(*, project):
    from webapp.datasets.models import DatasetStatus, Prompt

    return Prompt.objects.filter(dataset__project=project, dataset__status=DatasetStatus.READY)


def _categories(value) -> list[str]:
    from rlcore.errors import UserError
    from rlcore.routing.tagging import parse_categories

    try:
        return parse_categories(value if value is not None else "")
    except UserError as exc:
        raise ValidationError({"categories": str(exc).removeprefix("categories: ")}) from exc


def tagging_job_create(*, project, user, judge_config_id, categories, multi_label: bool = False) -> Job:
    """Queue a job that tags every prompt of the project with one (or, ``multi_label``, several) of
    ``categories`` (a comma-separated string or a list), asking the judge config's model."""
    errors = {}
    config = None
    if judge_config_id in (None, ""):
        errors["judge_config"] = "Choose the LM that tags the prompts (a judge config, Judges page)."
    else:
        config = JudgeConfig.objects.filter(project=project, pk=judge_config_id).first()
        if config is None:
            errors["judge_config"] = f"No judge config {judge_config_id} in this project."
    try:
        names = _categories(categories)
    except ValidationError as exc:
        errors.update(exc.message_dict)
        names = []
    if errors:
        raise ValidationError(errors)
    prompts = list(project_prompts(project=project).order_by("id").values_list("id", "text"))
    if not prompts:
        raise ValidationError({"categories": "This project has no prompts to tag: import a dataset first."})
    backend_argv, key = backend_arguments(config)
    argv = ["routing", "tag", "--input", PROMPTS_FILE, "--output", TAGS_FILE, "--categories", ",".join(names),
            *backend_argv, *(["--multi-label"] if multi_label else [])]
    spec = {"judge_config_id": config.pk, "judge": config.name, "model": config.model, "categories": names,
            "multi_label": bool(multi_label), "n_prompts": len(prompts)}
    with transaction.atomic():
        job = job_create(project=project, user=user, kind=TAG_KIND, argv=argv, spec=spec, queue=Queue.DEFAULT,
                         title=f"tag {len(prompts)} prompts by {config.name}")
        # Enqueued on commit: the files are in place before a worker can start the job.
        folder = Path(job.output_dir)
        folder.mkdir(parents=True, exist_ok=True)
        (folder / PROMPTS_FILE).write_text("".join(json.dumps({"id": pid, "prompt": text}, ensure_ascii=False) + "\n"
                                                   for pid, text in prompts), encoding="utf-8")
        write_key_file(folder, key)
    return job


def record_prompt_tags(sender, job: Job, **kwargs) -> int:
    """On success of a tagging job, store each prompt's tags (or its reason for none)."""
    if job.kind != TAG_KIND:
        return 0
    from webapp.datasets.models import Prompt

    folder = Path(job.output_dir)
    rows = {}
    try:
        lines = (folder / TAGS_FILE).read_text(encoding="utf-8").splitlines()
    except OSError:
        logger.warning("tagging job %s succeeded without %s", job.pk, TAGS_FILE)
        return 0
    for line in lines:
        try:
            row = json.loads(line)
            rows[int(row["id"])] = row
        except (ValueError, KeyError, TypeError):
            continue
    names = list(job.spec.get("categories") or [])
    with transaction.atomic():
        alive = set(Prompt.objects.filter(pk__in=list(rows), dataset__project_id=job.project_id)
                    .values_list("pk", flat=True))
        fresh = []
        for pid, row in rows.items():
            if pid not in alive:  # deleted since, or not this project's
                continue
            tags = [t for t in row.get("tags") or [] if t in names]  # never store a tag outside the list
            fresh.append(PromptTag(
                prompt_id=pid, tags=tags, reason="" if tags else str(row.get("error") or "no category in the reply")[:4000],
                raw_reply=str(row.get("raw_reply") or "")[:4000], categories=names,
                model_name=str(job.spec.get("model", ""))[:300], job=job))
        # The latest job wins: replace the prompts' earlier tags in one go.
        PromptTag.objects.filter(prompt_id__in=alive).delete()
        PromptTag.objects.bulk_create(fresh, batch_size=2000)
    return len(fresh)


def lm_tags_by_prompt(prompt_ids) -> dict[int, list[str]]:
    return dict(PromptTag.objects.filter(prompt_id__in=set(prompt_ids)).values_list("prompt_id", "tags"))


def tag_summary(*, project) -> dict:
    """Prompts per LM tag, how many have no tag (and the commonest reasons), and how many were never tagged."""
    counts: Counter[str] = Counter()
    reasons: Counter[str] = Counter()
    n_tagged = n_untagged = 0
    for tags, reason in PromptTag.objects.filter(prompt__in=project_prompts(project=project)).values_list(
            "tags", "reason"):
        if tags:
            n_tagged += 1
            counts.update(tags)
        else:
            n_untagged += 1
            reasons[reason] += 1
    total = project_prompts(project=project).count()
    return {"counts": dict(counts.most_common()), "n_tagged": n_tagged, "n_untagged": n_untagged,
            "n_not_tagged_yet": total - n_tagged - n_untagged, "n_prompts": total,
            "reasons": [{"reason": r, "count": n} for r, n in reasons.most_common(5)]}


def untagged_prompts(*, project, limit: int = 100) -> list[dict]:
    """Prompts the LM gave no tag, with the reason."""
    return [{"prompt_id": pid, "text": text[:200], "reason": reason} for pid, text, reason in
            PromptTag.objects.filter(prompt__in=project_prompts(project=project), tags=[])
            .order_by("prompt_id").values_list("prompt_id", "prompt__text", "reason")[:limit]]
