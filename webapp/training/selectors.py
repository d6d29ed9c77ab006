from pathlib import Path

from django.db.models import QuerySet

from webapp.training.models import RewardModel


def reward_model_list(*, project, include_deleted: bool = False) -> QuerySet[RewardModel]:
    models = RewardModel.objects.filter(project=project).select_related("job")
    return models if include_deleted else models.filter(deleted_at__isnull=True)


def known_policies(*, project) -> list[tuple[str, str]]:
    """(folder, label) of the policies a GRPO launch in ``project`` can start from: the demo policy that
    ``seed_demo`` built, then this project's finished GRPO runs' outputs, newest first. Only folders that
    still hold a saved model are offered."""
    from rlcore.training.demo_policy import DEMO_POLICY_LABEL, demo_policy_label
    from webapp.jobs.models import JobArtifact, JobState
    from webapp.training.demo import demo_policy_dir
    from webapp.training.services import GRPO_KIND

    policies: list[tuple[str, str]] = []
    demo = demo_policy_dir()
    if demo_policy_label(demo) and (demo / "config.json").is_file():
        policies.append((str(demo), DEMO_POLICY_LABEL))
    artifacts = (JobArtifact.objects.filter(job__project=project, job__kind=GRPO_KIND, job__state=JobState.SUCCEEDED,
                                            type="policy").select_related("job").order_by("-pk"))
    seen = {path for path, _ in policies}
    for artifact in artifacts[:50]:
        if artifact.path in seen or not (Path(artifact.path) / "config.json").is_file():
            continue
        seen.add(artifact.path)
        job = artifact.job
        started_from = demo_policy_label((job.spec or {}).get("policy", ""))
        origin = f", from the {started_from}" if started_from else ""
        policies.append((artifact.path, f"GRPO run #{job.pk}: {job.title.removeprefix('GRPO: ')} "
                                        f"(step {artifact.data.get('step', '?')}{origin})"))
    return policies
