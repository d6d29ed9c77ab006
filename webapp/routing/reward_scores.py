"""Reward-model disagreement for routing: a worker job scores the project's responses with every
registered reward model (``python -m rlcore reward score`` on a spec with one reward-model component
per model); the margins r(A) - r(B) of each model become a comparison's ``reward_margins``."""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Iterable
from pathlib import Path

from django.core.exceptions import ValidationError
from django.db import transaction

from webapp.jobs.models import Job, Queue
from webapp.jobs.services import job_create
from webapp.routing.models import ResponseRewardScore

SCORE_KIND = "score_responses"
ROWS_FILE, SPEC_FILE, SCORES_FILE = "rows.jsonl", "spec.json", "scores.jsonl"


def _component_name(model_id: int) -> str:
    return f"rm_{model_id}"


def reward_scores_job_create(*, project, user) -> Job:
    """Queue a job scoring every response of the project with every registered reward model."""
    from webapp.datasets.models import DatasetStatus, Response
    from webapp.training.selectors import reward_model_list

    models = list(reward_model_list(project=project))
    if not models:
        raise ValidationError({"reward_models": "The registry has no reward model: train one first (Training)."})
    responses = list(Response.objects.filter(prompt__dataset__project=project,
                                             prompt__dataset__status=DatasetStatus.READY)
                     .select_related("prompt").order_by("id"))
    if not responses:
        raise ValidationError({"reward_models": "This project has no responses to score: import a dataset first."})
    spec = {"name": "routing-reward-models", "normalization": "none", "components": [
        {"kind": "reward_model", "name": _component_name(m.pk), "path": m.path, "weight": 1.0} for m in models]}
    with transaction.atomic():
        job = job_create(project=project, user=user, kind=SCORE_KIND, argv=[], queue=Queue.GPU,
                         title=f"score {len(responses)} responses with {len(models)} reward model(s)",
                         spec={"reward_model_ids": [m.pk for m in models], "response_ids": [r.pk for r in responses]})
        job.argv = write_scoring_files(Path(job.output_dir), spec=spec, rows=(
            {"prompt": response.prompt.messages or response.prompt.text,
             "completion": response.messages or response.text} for response in responses))
        job.save(update_fields=["argv"])
    return job


def write_scoring_files(folder: Path, *, spec: dict, rows: Iterable[dict]) -> list[str]:
    """Freeze a scoring job's inputs in ``folder`` (the spec, the rows in order) and return the rlcore argv that
    scores them; its output line ``index`` is the row's position. Analysis scores its sources the same way."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / SPEC_FILE).write_text(json.dumps(spec), encoding="utf-8")
    with (folder / ROWS_FILE).open("w", encoding="utf-8") as out:
        for row in rows:
            out.write(json.dumps(row) + "\n")
    return ["reward", "score", "--spec", str(folder / SPEC_FILE), "--input", str(folder / ROWS_FILE),
            "--output", str(folder / SCORES_FILE)]


def read_scored_rows(folder: Path) -> list[dict]:
    """What ``reward score`` wrote: ``{"index", "total", "components": {name: value}}`` per row."""
    return [json.loads(line) for line in (folder / SCORES_FILE).read_text(encoding="utf-8").splitlines() if line]


def record_reward_scores(sender, job: Job, **kwargs) -> int:
    """On success of a scoring job, store each (response, model) score, replacing older ones."""
    if job.kind != SCORE_KIND:
        return 0
    from webapp.datasets.models import Response
    from webapp.training.models import RewardModel

    response_ids = job.spec["response_ids"]
    model_ids = set(RewardModel.objects.filter(pk__in=job.spec["reward_model_ids"]).values_list("pk", flat=True))
    alive = set(Response.objects.filter(pk__in=response_ids).values_list("pk", flat=True))
    rows = []
    for scored in read_scored_rows(Path(job.output_dir)):
        response_id = response_ids[scored["index"]]
        for model_id in model_ids:
            value = scored["components"].get(_component_name(model_id))
            if response_id in alive and value is not None:
                rows.append(ResponseRewardScore(response_id=response_id, reward_model_id=model_id, score=value))
    with transaction.atomic():
        ResponseRewardScore.objects.filter(response_id__in=alive, reward_model_id__in=model_ids).delete()
        ResponseRewardScore.objects.bulk_create(rows, batch_size=2000)
    return len(rows)


def reward_margins(comparisons) -> dict[int, list[float]]:
    """Per comparison, r(A) - r(B) for each live registered model that scored both responses."""
    ids = {rid for c in comparisons for rid in c.response_ids[:2]}
    scores: dict[int, dict[int, float]] = defaultdict(dict)
    for response_id, model_id, score in (ResponseRewardScore.objects
                                         .filter(response_id__in=ids, reward_model__deleted_at__isnull=True)
                                         .values_list("response_id", "reward_model_id", "score")):
        scores[response_id][model_id] = score
    margins = {}
    for c in comparisons:
        a, b = scores.get(c.response_ids[0], {}), scores.get(c.response_ids[1], {})
        margins[c.pk] = [a[m] - b[m] for m in sorted(set(a) & set(b))]
    return margins
