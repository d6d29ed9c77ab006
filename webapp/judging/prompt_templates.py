"""Judge prompt templates: versioned texts per name, each of one mode (compare, grade, rank, steps).

An edit saves a new version and the old ones stay, so every LM label can name the template@version that
made it (its provenance); rlcore's own contract (rlcore.judges.prompts.JudgePromptTemplate) says what a
text of each mode must contain.
"""

from __future__ import annotations

from django.core.exceptions import ValidationError
from django.db import transaction
from django.db.models import Max

from webapp.judging.models import JudgePromptTemplate, PromptMode


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

