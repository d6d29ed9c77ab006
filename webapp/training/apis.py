from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from datetime import datetime
from typing import Any

from django.core.exceptions import ValidationError
from django.shortcuts import get_object_or_404
from ninja import Router, Schema, Status
from pydantic import Field
from rlcore.generation.spec import GenerationSettings
from rlcore.launch import LaunchSettings
from rlcore.training.specs import GRPOSettings, PRMSettings, RewardModelSettings

from webapp.datasets.apis import DatasetOut
from webapp.jobs.apis import JobOut
from webapp.jobs.models import Job, Queue
from webapp.projects.permissions import Capability, project_for_user
from webapp.training import selectors, services
from webapp.training.models import RewardModel

router = Router(tags=["training"])


@contextmanager
def body_field_names(settings: type[LaunchSettings], renamed: Mapping[str, str] = {}) -> Iterator[None]:
    """A service's ValidationError names its own arguments; the 422 names this body's fields: a setting is under
    ``spec.``, and ``renamed`` maps the arguments the body names differently (``dataset`` -> ``dataset_id``)."""
    try:
        yield
    except ValidationError as exc:
        raise ValidationError({
            renamed.get(field, f"spec.{field}" if field.split(".")[0] in settings.model_fields else field): messages
            for field, messages in exc.message_dict.items()}) from None


class RewardModelLaunchIn(Schema):
    name: str
    spec: RewardModelSettings = Field(default_factory=RewardModelSettings, description=(
        "The run's settings (rlcore's RewardModelSettings); the output folder and the preference snapshot are "
        "the launch's own."))
    tie_policy: str = Field("drop", description=(
        "drop | keep (one row marked tie, trained with the Bradley-Terry tie loss, target 1/2) | split (both "
        "orders, marked tie)"))
    conversational: bool = False
    source: str | None = Field(None, description="'human', 'lm', or null for both")
    queue: str = Queue.GPU


class GRPOLaunchIn(Schema):
    name: str = ""
    dataset_id: int
    reward_spec_version_id: int
    policy: str
    spec: GRPOSettings = Field(default_factory=GRPOSettings, description=(
        "The run's settings (rlcore's GRPOSettings); the policy, the reward spec version and the prompt set are "
        "this body's other fields, the output folder and the snapshot the launch's own."))
    queue: str = Queue.GPU


class RewardModelOut(Schema):
    id: int
    name: str
    path: str
    backbone: str
    member: int | None
    job_id: int
    snapshot_path: str
    metrics: dict[str, Any] = Field(description=(
        "Held-out accuracy with n_pairs (decisive pairs it rests on), n_ties_excluded and a 95% Wilson interval "
        "accuracy_ci_low/high; margin, brier, ece, loss; data: rows in, train/held-out rows kept, dropped by "
        "reason, and the held-out split"))
    created_at: datetime


@router.post("/{project_id}/training/reward-model", response={201: JobOut},
             summary="Snapshot the labels and launch a reward-model training job")
def launch_reward_model(request, project_id: int, body: RewardModelLaunchIn):
    project, _ = project_for_user(request.auth, project_id, Capability.DESIGN)
    with body_field_names(RewardModelSettings):
        job = services.reward_model_job_create(
            project=project, user=request.auth, name=body.name, settings=body.spec, tie_policy=body.tie_policy,
            conversational=body.conversational, source=body.source, queue=body.queue)
    return Status(201, job)


@router.post("/{project_id}/training/grpo", response={201: JobOut},
             summary="Snapshot a prompt set and a reward spec version and launch a GRPO job")
def launch_grpo(request, project_id: int, body: GRPOLaunchIn):
    from webapp.datasets.models import Dataset, DatasetStatus
    from webapp.rubrics.models import RewardSpecVersion

    project, _ = project_for_user(request.auth, project_id, Capability.DESIGN)
    dataset = get_object_or_404(Dataset, project=project, pk=body.dataset_id, status=DatasetStatus.READY)
    version = get_object_or_404(RewardSpecVersion, spec__project=project, pk=body.reward_spec_version_id)
    with body_field_names(GRPOSettings, {"dataset": "dataset_id", "reward_spec_version": "reward_spec_version_id"}):
        job = services.grpo_job_create(project=project, user=request.auth, name=body.name, dataset=dataset,
                                       reward_spec_version=version, policy=body.policy, settings=body.spec,
                                       queue=body.queue)
    return Status(201, job)


class PRMLaunchIn(Schema):
    name: str
    spec: PRMSettings = Field(description=(
        "The run's settings (rlcore's PRMSettings; backbone is required); the output folder and the stepwise "
        "snapshot are the launch's own."))
    source: str | None = Field(None, description="'human' (people's labels, reviewed LM suggestions included), "
                                                 "'lm' (LM pre-labels), or null for both")
    queue: str = Queue.GPU


class ProcessRewardModelOut(Schema):
    id: int
    name: str
    path: str
    backbone: str
    step_separator: str
    job_id: int
    snapshot_path: str
    metrics: dict[str, Any] = Field(description=(
        "Held-out step_accuracy with n_steps and step_accuracy_interval (95% Wilson), first_error_accuracy with "
        "n_responses and first_error_accuracy_interval, bad_step_share; data: stepwise rows in, train / held-out "
        "rows kept, dropped by reason, and the split (by response)"))
    created_at: datetime


@router.post("/{project_id}/training/prm", response={201: JobOut},
             summary="Snapshot the step labels and launch a process-reward-model training job")
def launch_prm(request, project_id: int, body: PRMLaunchIn):
    project, _ = project_for_user(request.auth, project_id, Capability.DESIGN)
    with body_field_names(PRMSettings):
        job = services.prm_job_create(project=project, user=request.auth, name=body.name, settings=body.spec,
                                      source=body.source, queue=body.queue)
    return Status(201, job)


@router.get("/{project_id}/process-reward-models", response=list[ProcessRewardModelOut],
            summary="The process-reward-model registry")
def list_prms(request, project_id: int):
    project, _ = project_for_user(request.auth, project_id, Capability.VIEW_DASHBOARDS)
    return list(selectors.prm_list(project=project))


@router.delete("/{project_id}/process-reward-models/{model_id}", response={204: None})
def delete_prm(request, project_id: int, model_id: int):
    from webapp.training.models import ProcessRewardModel

    project, _ = project_for_user(request.auth, project_id, Capability.DESIGN)
    services.prm_delete(prm=get_object_or_404(ProcessRewardModel, project=project, pk=model_id,
                                              deleted_at__isnull=True))
    return Status(204, None)


@router.post("/{project_id}/jobs/{job_id}/resume", response={201: JobOut},
             summary="Resume a failed or cancelled training job from its last checkpoint")
def resume_job(request, project_id: int, job_id: int):
    project, _ = project_for_user(request.auth, project_id, Capability.DESIGN)
    job = get_object_or_404(Job, project=project, pk=job_id)
    return Status(201, services.job_resume(job=job, user=request.auth))


class PolicyOut(Schema):
    id: int | None = Field(None, description="Registry id (None only for the unregistered demo policy).")
    path: str = Field(description="What loads it: a model folder, a hub id, or the model name at endpoint_url.")
    label: str = Field(description="What it is: 'demo policy: random weights', or the GRPO run it came from.")
    name: str = ""
    source: str = Field("", description="grpo_run | checkpoint | folder | hub | endpoint | demo")
    endpoint_url: str = ""
    key_source: str = Field("none", description="Where the endpoint key comes from; the key is never shown.")
    job_id: int | None = Field(None, description="The GRPO run that produced it.")
    step: int | None = Field(None, description="Training step of the checkpoint / final policy.")
    reward_spec_version_id: int | None = None
    snapshot_path: str = Field("", description="The prompt snapshot the run trained on.")
    metrics: dict[str, Any] = Field(default_factory=dict, description="The run's reward/KL figures at that step.")
    created_at: datetime | None = None

    @staticmethod
    def of(policy) -> "PolicyOut":
        return PolicyOut(id=policy.pk, path=policy.location, label=selectors.policy_label(policy), name=policy.name,
                         source=policy.source, endpoint_url=policy.endpoint_url, key_source=policy.key_source,
                         job_id=policy.job_id, step=policy.step, reward_spec_version_id=policy.reward_spec_version_id,
                         snapshot_path=policy.snapshot_path, metrics=policy.metrics, created_at=policy.created_at)


class PolicyRegisterIn(Schema):
    source: str = Field(description="checkpoint | folder | hub | endpoint (run policies register themselves)")
    name: str = ""
    location: str = Field("", description="folder: absolute model folder; hub: hub id; endpoint: model name")
    job_id: int | None = Field(None, description="checkpoint: the GRPO run")
    step: int | None = Field(None, description="checkpoint: its step (checkpoints/checkpoint-<step>)")
    endpoint_url: str = Field("", description="endpoint: API root, e.g. http://127.0.0.1:8000/v1")
    api_key: str = Field("", description="endpoint: stored encrypted, never shown back")
    api_key_env: str = Field("", description="endpoint: or an operator-allowed variable (JUDGE_KEY_ENV_ALLOWLIST)")


@router.get("/{project_id}/policies", response=list[PolicyOut],
            summary="The policy registry (demo policy, GRPO runs and their checkpoints, folders, hub ids, endpoints)")
def list_policies(request, project_id: int):
    project, _ = project_for_user(request.auth, project_id, Capability.VIEW_DASHBOARDS)
    return [PolicyOut.of(policy) for policy in selectors.policy_list(project=project)]


@router.post("/{project_id}/policies", response={201: PolicyOut}, summary="Register a policy")
def register_policy(request, project_id: int, body: PolicyRegisterIn):
    project, _ = project_for_user(request.auth, project_id, Capability.DESIGN)
    job = get_object_or_404(Job, project=project, pk=body.job_id) if body.job_id is not None else None
    policy = services.policy_register(
        project=project, user=request.auth, name=body.name, source=body.source, location=body.location,
        endpoint_url=body.endpoint_url, api_key=body.api_key, api_key_env=body.api_key_env, job=job, step=body.step)
    return Status(201, PolicyOut.of(policy))


@router.delete("/{project_id}/policies/{policy_id}", response={204: None})
def delete_policy(request, project_id: int, policy_id: int):
    from webapp.training.models import Policy

    project, _ = project_for_user(request.auth, project_id, Capability.DESIGN)
    services.policy_delete(policy=get_object_or_404(Policy, project=project, pk=policy_id, deleted_at__isnull=True))
    return Status(204, None)


@router.get("/{project_id}/reward-models", response=list[RewardModelOut], summary="The reward-model registry")
def list_reward_models(request, project_id: int):
    project, _ = project_for_user(request.auth, project_id, Capability.VIEW_DASHBOARDS)
    return list(selectors.reward_model_list(project=project))


@router.delete("/{project_id}/reward-models/{model_id}", response={204: None})
def delete_reward_model(request, project_id: int, model_id: int):
    project, _ = project_for_user(request.auth, project_id, Capability.DESIGN)
    services.reward_model_delete(reward_model=get_object_or_404(RewardModel, project=project, pk=model_id))
    return Status(204, None)


# --- generation: registered policies answer a prompt set (a job); the answers become a dataset version ---------

class GenerationLaunchIn(Schema):
    dataset_id: int = Field(description="The prompt set (a ready dataset of the project).")
    policy_ids: list[int] = Field(description="Registered policies (GET .../policies); each answers every prompt.")
    round: int | None = Field(None, ge=1, description="Design-loop round the responses belong to.")
    spec: GenerationSettings = Field(default_factory=GenerationSettings, description=(
        "How responses are sampled (rlcore's GenerationSettings); the prompts, the output and the policies are "
        "the launch's own."))


class DatasetVersionOut(DatasetOut):
    parent_id: int | None = Field(description="The prompt set this version was generated from (null: an import).")
    version: int = Field(description="1 for an import; each generation job adds the next number.")
    job_id: int | None = Field(description="The generation job that wrote it (the latest re-run).")
    partial: bool = Field(description="The job stopped early or wrote fewer responses than policies x samples x "
                                      "prompts; a re-run of the job fills in what is missing.")
    generation: dict[str, Any] = Field(description="The GenerationSpec it was made with, the policy ids and round.")


@router.post("/{project_id}/generation", response={201: JobOut},
             summary="Launch a generation job: registered policies answer a prompt set into a new dataset version")
def launch_generation(request, project_id: int, body: GenerationLaunchIn):
    from webapp.datasets.models import Dataset
    from webapp.training.models import Policy

    project, _ = project_for_user(request.auth, project_id, Capability.DESIGN)
    dataset = Dataset.objects.filter(project=project, pk=body.dataset_id).first()
    if dataset is None:
        raise ValidationError({"dataset_id": f"No dataset {body.dataset_id} in this project."})
    found = {p.pk: p for p in Policy.objects.filter(project=project, pk__in=body.policy_ids, deleted_at__isnull=True)}
    missing = [pk for pk in body.policy_ids if pk not in found]
    if missing:
        raise ValidationError({"policy_ids": f"Not in this project's registry: {', '.join(map(str, missing))}."})
    with body_field_names(GenerationSettings, {"dataset": "dataset_id", "policies": "policy_ids"}):
        job = services.generation_job_create(project=project, user=request.auth, dataset=dataset,
                                             policies=[found[pk] for pk in dict.fromkeys(body.policy_ids)],
                                             settings=body.spec, round=body.round)
    return Status(201, job)


@router.post("/{project_id}/generation/{job_id}/rerun", response={201: JobOut},
             summary="Run a stopped generation job again: only what is missing is generated, never duplicated")
def rerun_generation(request, project_id: int, job_id: int):
    from webapp.jobs.kinds import GENERATE_KIND

    project, _ = project_for_user(request.auth, project_id, Capability.DESIGN)
    job = get_object_or_404(Job, project=project, pk=job_id, kind=GENERATE_KIND)
    return Status(201, services.generation_rerun(job=job, user=request.auth))


@router.get("/{project_id}/datasets/{dataset_id}/versions", response=list[DatasetVersionOut],
            summary="A prompt set and the versions generated from it, oldest first")
def list_dataset_versions(request, project_id: int, dataset_id: int):
    from webapp.datasets.models import Dataset

    project, _ = project_for_user(request.auth, project_id, Capability.VIEW_DASHBOARDS)
    dataset = get_object_or_404(Dataset, project=project, pk=dataset_id)
    root = dataset.parent or dataset
    return [root, *Dataset.objects.filter(parent=root).order_by("version", "pk")]
