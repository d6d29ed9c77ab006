from pathlib import Path

from django.db.models import QuerySet

from webapp.training.models import Policy, PolicySource, RewardModel


def reward_model_list(*, project, include_deleted: bool = False) -> QuerySet[RewardModel]:
    models = RewardModel.objects.filter(project=project).select_related("job")
    return models if include_deleted else models.filter(deleted_at__isnull=True)


def prm_list(*, project, include_deleted: bool = False):
    from webapp.training.models import ProcessRewardModel

    models = ProcessRewardModel.objects.filter(project=project).select_related("job")
    return models if include_deleted else models.filter(deleted_at__isnull=True)


def project_policy_ids(*, project, ids) -> set[int]:
    """The ids among ``ids`` that are policies of the project's registry (deleted ones included)."""
    return set(Policy.objects.filter(project=project, pk__in=ids).values_list("pk", flat=True))


def ensemble_members(*, project, job_id: int) -> list[RewardModel]:
    """The reward models job ``job_id`` registered as an ensemble (``member`` set), in member order."""
    return list(RewardModel.objects.filter(project=project, job_id=job_id, member__isnull=False,
                                           deleted_at__isnull=True).order_by("member"))


def ensembles(*, project) -> list[dict]:
    """The project's registered ensembles (jobs whose RewardModel rows have ``member`` set), newest job first,
    each with its member names."""
    out: dict[int, dict] = {}
    for job_id, name in (RewardModel.objects.filter(project=project, member__isnull=False, deleted_at__isnull=True)
                         .order_by("-job_id", "member").values_list("job_id", "name")):
        out.setdefault(job_id, {"job_id": job_id, "members": []})["members"].append(name)
    return list(out.values())


def policy_list(*, project, include_deleted: bool = False) -> QuerySet[Policy]:
    """The project's policy registry: the demo policy first, then newest first."""
    from django.db.models import Case, IntegerField, Value, When

    policies = (Policy.objects.filter(project=project).select_related("job", "reward_spec_version__spec")
                .order_by(Case(When(source=PolicySource.DEMO, then=Value(0)), default=Value(1),
                               output_field=IntegerField()), "-created_at", "-id"))
    return policies if include_deleted else policies.filter(deleted_at__isnull=True)


def policy_label(policy: Policy) -> str:
    """How a registry entry is named wherever it is offered: the demo label, or its name and where it came from."""
    from rlcore.training.demo_policy import DEMO_POLICY_LABEL

    if policy.source == PolicySource.DEMO:
        return DEMO_POLICY_LABEL
    if policy.job_id:
        from rlcore.training.demo_policy import demo_policy_label

        started_from = demo_policy_label((policy.job.spec or {}).get("policy", ""))
        origin = f", from the {started_from}" if started_from else ""
        step = policy.step if policy.step is not None else "?"
        return f"GRPO run #{policy.job_id}: {policy.name} (step {step}{origin})"
    return f"{policy.name} ({policy.get_source_display().lower()})"


def known_policies(*, project) -> list[tuple[str, str]]:
    """(location, label) of the registered policies a GRPO launch in ``project`` can start from (local folders
    that still hold a saved model, and hub ids; endpoints cannot be trained). The demo policy seed_demo built is
    offered too when this project has not registered it."""
    from rlcore.training.demo_policy import DEMO_POLICY_LABEL, demo_policy_label
    from webapp.training.demo import demo_policy_dir

    offered: list[tuple[str, str]] = []
    for policy in policy_list(project=project).exclude(source=PolicySource.ENDPOINT)[:200]:
        if policy.source != PolicySource.HUB and not (Path(policy.location) / "config.json").is_file():
            continue
        offered.append((policy.location, policy_label(policy)))
    demo = demo_policy_dir()
    if str(demo) not in dict(offered) and demo_policy_label(demo) and (demo / "config.json").is_file():
        offered.insert(0, (str(demo), DEMO_POLICY_LABEL))
    return offered


def generated_version(*, job):
    """The dataset version a generation job (or its re-run, same folder) writes; None until it has responses."""
    from webapp.datasets.models import Dataset

    output = (job.spec or {}).get("output")
    return Dataset.objects.filter(project=job.project, generation__output=output).first() if output else None
