"""Reads for datasets."""

from __future__ import annotations

from django.db.models import QuerySet

from webapp.datasets.models import Dataset, DatasetStatus, Prompt


def dataset_list(*, project) -> QuerySet[Dataset]:
    return Dataset.objects.filter(project=project).order_by("-created_at")


def dataset_get(*, project, dataset_id: int) -> Dataset:
    from django.shortcuts import get_object_or_404

    return get_object_or_404(Dataset, project=project, pk=dataset_id)


def prompt_list(*, dataset: Dataset, limit: int = 50, offset: int = 0) -> QuerySet[Prompt]:
    """Rows of a ready dataset (a staging dataset shows nothing), with their responses."""
    if dataset.status != DatasetStatus.READY:
        return Prompt.objects.none()
    return dataset.prompts.prefetch_related("responses").order_by("source_line", "id")[offset:offset + limit]
