"""Reads for rubrics and reward specs."""

from __future__ import annotations

from django.db.models import QuerySet

from webapp.projects.models import Project
from webapp.rubrics.models import RewardSpec, RewardSpecVersion, Rubric, RubricVersion


def annotation_rubric_for(project: Project) -> RubricVersion | None:
    """The latest version of the project's rubric marked for annotation, or None."""
    return (
        RubricVersion.objects.select_related("rubric")
        .filter(rubric__project=project, rubric__use_for_annotation=True)
        .order_by("-number")
        .first()
    )
