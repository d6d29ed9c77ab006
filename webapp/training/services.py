"""Launching training jobs from the webapp: freeze a data snapshot, write the rlcore spec the
worker's child process reads, and register what a successful run produced.

The spec objects are rlcore's own (`RewardModelTrainSpec`, `GRPOTrainSpec`, ...). A launch takes their settings
part (`RewardModelSettings`, ..., rlcore.launch), already checked by the form or the API body that holds it, and
adds what the launch provides (the output folder, the snapshot), so the webapp and the CLI accept exactly the same
settings and a launcher's field can never come from a user.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone
from pydantic import ValidationError as PydanticValidationError
from rlcore.generation.spec import GenerationSettings, GenerationSpec
from rlcore.training.specs import (
    GRPOSettings,
    GRPOTrainSpec,
    PRMSettings,
    PRMTrainSpec,
    RewardModelSettings,
    RewardModelTrainSpec,
)

from webapp.forms_util import pydantic_errors
from webapp.jobs.kinds import GRPO_KIND, PRM_KIND, REWARD_MODEL_KIND, TRAINING_KINDS
from webapp.jobs.models import Job, JobState, Queue
from webapp.jobs.services import job_create
from webapp.training.models import RewardModel

MIN_PREFERENCE_PAIRS = 8
MIN_STEPWISE_ROWS = 10  # rlcore.training.prm.load_rows refuses fewer (8 to train, 2 held out)


def _check_model_location(field: str, location: str, project) -> None:
    """A folder must be one this project may use and exist now, not fail an hour into the queue."""
    from webapp.training.model_locations import model_location_problem

    if problem := model_location_problem(project=project, location=location):
        raise ValidationError({field: problem})


def _launch_spec(spec_class, settings, **provided):
    """The run's spec: the settings (checked where they came in, the form or the API body) with what the launch
    provides. Only a check across the two can fail here (GRPO: the preset against the reward's normalisation)."""
    try:
        return spec_class.model_validate({**settings.model_dump(), **provided})
    except PydanticValidationError as exc:
        raise pydantic_errors(exc.errors()) from None


def _write_spec(job: Job, spec) -> Path:
    path = Path(job.output_dir) / "spec.json"
    path.write_text(spec.model_dump_json(indent=2))
    return path


def _finish_launch(job: Job, spec, command: str) -> Job:
    spec_path = _write_spec(job, spec)
    job.argv = ["train", command, str(spec_path)]
    job.spec = json.loads(spec.model_dump_json())
    job.save(update_fields=["argv", "spec"])
    return job


class _OutputDirCleanup:
    """Remove a job's output directory if the launch transaction fails: no orphan snapshots."""

    def __init__(self):
        self.path: Path | None = None

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc_type is not None and self.path is not None:
            shutil.rmtree(self.path, ignore_errors=True)
        return False


def reward_model_job_create(
    *, project, user, name: str, settings: RewardModelSettings, tie_policy: str = "drop", conversational: bool = False,
    source: str | None = None, queue: str = Queue.GPU,
) -> Job:
    """Freeze the project's labels as a TRL preference snapshot and queue a reward-model run."""
    from webapp.annotation.services import labels_export

    name = (name or "").strip()
    if not name:
        raise ValidationError({"name": "Name the reward model (it appears in the registry)."})
    _check_model_location("backbone", settings.backbone, project)
    with _OutputDirCleanup() as cleanup, transaction.atomic():
        job = job_create(project=project, user=user, kind=REWARD_MODEL_KIND, argv=[], queue=queue,
                         title=f"reward model: {name}")
        cleanup.path = Path(job.output_dir)
        exported, summary = labels_export(project=project, fmt="jsonl", conversational=conversational,
                                          tie_policy=tie_policy, source=source)
        pairs = summary.rows_out
        if pairs < MIN_PREFERENCE_PAIRS:
            os.remove(exported)
            dropped = "".join(f"; {n} dropped: {reason}" for reason, n in sorted(summary.labels_dropped.items()))
            raise ValidationError({"snapshot": (
                f"The labels give only {pairs} preference pairs from {summary.labels_in} labels (with tie policy "
                f"'{tie_policy}'{dropped}); a reward model needs at least {MIN_PREFERENCE_PAIRS}. "
                "Label more comparisons first.")})
        snapshot = cleanup.path / "snapshot" / "preferences.jsonl"
        snapshot.parent.mkdir(parents=True, exist_ok=True)
        os.replace(exported, snapshot)
        spec = _launch_spec(RewardModelTrainSpec, settings, output_dir=cleanup.path, preference_snapshot=snapshot)
        job = _finish_launch(job, spec, "reward-model")
        # what the snapshot rests on, beside the spec: shown on the job page and in the registry
        job.spec = {**job.spec, "export": summary.model_dump()}
        job.save(update_fields=["spec"])
        return job


def _prompt_rows(dataset) -> list[dict[str, Any]]:
    rows = []
    for prompt in dataset.prompts.order_by("source_line", "pk").only("text", "messages", "metadata"):
        rows.append({**(prompt.metadata or {}), "prompt": prompt.messages or prompt.text})
    return rows


def grpo_job_create(
    *, project, user, name: str, dataset, reward_spec_version, policy: str, settings: GRPOSettings,
    queue: str = Queue.GPU,
) -> Job:
    """Freeze a prompt set and a reward spec version, and queue a GRPO run."""
    from rlcore.rewards.check import check_spec
    from rlcore.rewards.spec import RewardSpec

    name = (name or "").strip() or f"GRPO on {dataset.name}"
    policy = (policy or "").strip()
    if not policy:
        raise ValidationError({"policy": "Give the policy model: a local directory or a hub id."})
    _check_model_location("policy", policy, project)
    from webapp.training.model_locations import check_spec_models

    check_spec_models(project=project, definition=reward_spec_version.definition)
    try:
        reward_spec = RewardSpec.model_validate(reward_spec_version.definition)
    except PydanticValidationError as exc:
        raise pydantic_errors(exc.errors(), prefix="reward_spec.") from None
    rows = _prompt_rows(dataset)
    if not rows:
        raise ValidationError({"dataset": f"Dataset '{dataset.name}' has no prompts."})
    columns = sorted({key for row in rows for key in row})
    problems = check_spec(reward_spec, dataset_columns=columns)
    if problems:
        raise ValidationError({"reward_spec_version": [str(problem) for problem in problems]})
    # Rows need not share columns, but a prompt nothing can score must be refused here, not an hour in.
    from rlcore.training.grpo import prompt_column_problems

    gaps = prompt_column_problems(reward_spec, rows)
    if gaps:
        raise ValidationError({"dataset": [f"Prompt set '{dataset.name}': {gap}" for gap in gaps]})
    if len(rows) < settings.prompts_per_rollout():  # TRL would silently train on nothing
        raise ValidationError({"dataset": (
            f"Dataset '{dataset.name}' has {len(rows)} prompts, but one rollout of preset '{settings.preset}' "
            f"needs {settings.prompts_per_rollout()} (per-device batch size {settings.per_device_train_batch_size} "
            f"x {settings.rollout_steps} steps per generation / {settings.num_generations} generations). Add "
            "prompts, or lower the batch size or the steps per generation.")})
    with _OutputDirCleanup() as cleanup, transaction.atomic():
        job = job_create(project=project, user=user, kind=GRPO_KIND, argv=[], queue=queue, title=f"GRPO: {name}")
        cleanup.path = Path(job.output_dir)
        snapshot = cleanup.path / "snapshot" / "prompts.jsonl"
        snapshot.parent.mkdir(parents=True, exist_ok=True)
        with snapshot.open("w") as out:
            for row in rows:
                out.write(json.dumps(row) + "\n")
        spec = _launch_spec(GRPOTrainSpec, settings, policy=policy, reward_spec=reward_spec,
                            output_dir=cleanup.path, prompt_snapshot=snapshot)
        job = _finish_launch(job, spec, "grpo")
        job.spec = {**job.spec, "reward_spec_version_id": reward_spec_version.pk, "dataset_id": dataset.pk}
        if label := policy_label(project=project, policy=policy):  # shown on the job page beside the folder
            job.spec["policy_label"] = label
        job.save(update_fields=["spec"])
        return job


def policy_label(*, project, policy: str) -> str | None:
    """What a known policy is called ('demo policy: random weights', 'GRPO run #4: ...'), or None."""
    from rlcore.training.demo_policy import demo_policy_label
    from webapp.training.selectors import known_policies

    return dict(known_policies(project=project)).get(policy) or demo_policy_label(policy)


@transaction.atomic
def job_resume(*, job: Job, user) -> Job:
    """Continue a stopped or failed training run from its last checkpoint, as a new job in the
    same output directory (the old one keeps its history)."""
    if job.kind not in TRAINING_KINDS:
        raise ValidationError({"job": "Only training jobs can be resumed."})
    if job.state not in (JobState.FAILED, JobState.CANCELLED):
        raise ValidationError({"job": f"Only a failed or cancelled job can be resumed; this one is {job.state}."})
    from rlcore.training.runtime import has_resume_point

    if not has_resume_point(job.output_dir):
        raise ValidationError({"job": "This run stopped before its first checkpoint, so there is nothing to resume "
                                      "from; launch it again with the same settings (Clone) instead."})
    argv = [arg for arg in job.argv if arg != "--resume"] + ["--resume"]
    return job_create(project=job.project, user=user, kind=job.kind, argv=argv, spec=job.spec, queue=job.queue,
                      title=job.title, parent=job, output_dir=job.output_dir)


def _lineage(job: Job) -> list[Job]:
    """The job and the runs it resumed, which share its output directory."""
    chain = [job]
    while chain[-1].parent_id and chain[-1].parent.output_dir == job.output_dir and len(chain) < 100:
        chain.append(chain[-1].parent)
    return chain


def register_trained_models(sender, job: Job, **kwargs) -> list[RewardModel]:
    """On success of a reward-model run, register each complete model directory it announced."""
    if job.kind != REWARD_MODEL_KIND:
        return []
    from webapp.jobs.models import JobArtifact

    spec = job.spec or {}
    base_name = job.title.removeprefix("reward model: ")
    registered = []
    artifacts = JobArtifact.objects.filter(job__in=_lineage(job), type="reward_model").order_by("pk")
    latest_by_path = {artifact.path: artifact for artifact in artifacts}
    for path, artifact in latest_by_path.items():
        if not (Path(path) / "config.json").is_file():
            continue  # announced but gone: never register what cannot be loaded
        member = artifact.data.get("member")
        model, _ = RewardModel.objects.get_or_create(job=job, path=path, defaults={
            "project": job.project,
            "name": base_name if member in (None, 0) and len(latest_by_path) == 1 else f"{base_name} #{member}",
            "backbone": spec.get("backbone", ""), "member": member,
            "snapshot_path": spec.get("preference_snapshot", ""), "spec": spec,
            "metrics": {**(artifact.data.get("metrics") or {}), "data": artifact.data.get("data") or {}},
        })
        registered.append(model)
    return registered


def reward_model_delete(*, reward_model: RewardModel) -> None:
    """Hide it from the registry; reward spec versions that use it refuse to launch from now on."""
    RewardModel.objects.filter(pk=reward_model.pk).update(deleted_at=timezone.now())
    # servers of a spec that uses it refuse from their next request (rlcore reward serve --withdrawn-file)
    from webapp.rubrics.services import reward_spec_serving_withdraw

    reward_spec_serving_withdraw(project=reward_model.project, path=reward_model.path,
                                 reason=f"reward model {reward_model.name!r} was deleted from the registry")


# --- process reward models: step labels -> stepwise snapshot -> train prm -> the PRM registry --------------

PRM_SOURCES = {"human": ("human", "reviewed"), "lm": ("lm",)}  # None: every step label


def prm_job_create(*, project, user, name: str, settings: PRMSettings, source: str | None = None,
                   queue: str = Queue.GPU) -> Job:
    """Freeze the project's step labels as a TRL stepwise snapshot (annotation's step_labels_export, the same
    file the export gives) and queue ``python -m rlcore train prm``. ``source``: 'human' (people's labels,
    reviewed LM suggestions included), 'lm' (LM pre-labels only) or None (all). Everything is checked before the
    job is queued; a refused launch leaves no job and no folder."""
    from webapp.annotation.services import step_labels_export

    name = (name or "").strip()
    if not name:
        raise ValidationError({"name": "Name the process reward model (it appears in the registry)."})
    if source not in (None, "", *PRM_SOURCES):
        raise ValidationError({"source": "Pick 'human', 'lm', or leave it blank for both."})
    _check_model_location("backbone", settings.backbone, project)
    with _OutputDirCleanup() as cleanup, transaction.atomic():
        job = job_create(project=project, user=user, kind=PRM_KIND, argv=[], queue=queue,
                         title=f"process reward model: {name}")
        cleanup.path = Path(job.output_dir)
        exported, counts = step_labels_export(project=project)
        snapshot = cleanup.path / "snapshot" / "steps.jsonl"
        snapshot.parent.mkdir(parents=True, exist_ok=True)
        kept, dropped = 0, 0
        with open(exported) as rows, snapshot.open("w") as out:
            for line in rows:
                if source and json.loads(line).get("source") not in PRM_SOURCES[source]:
                    dropped += 1
                    continue
                out.write(line)
                kept += 1
        os.remove(exported)
        if kept < MIN_STEPWISE_ROWS:
            left_out = f" ({dropped} left out: not {source} labels)" if dropped else ""
            raise ValidationError({"snapshot": (
                f"The project has {kept} step labels to train on{left_out}; a process reward model needs at least "
                f"{MIN_STEPWISE_ROWS} (8 to train, 2 held out). Label more step items first.")})
        spec = _launch_spec(PRMTrainSpec, settings, output_dir=cleanup.path, step_snapshot=snapshot)
        job = _finish_launch(job, spec, "prm")
        job.spec = {**job.spec, "export": {"labels_in": counts["labels_in"], "rows_out": kept,
                                           "labels_dropped": {f"not {source} labels": dropped} if dropped else {},
                                           "source": source or "all"}}
        job.save(update_fields=["spec"])
        return job


def register_trained_prms(sender, job: Job, **kwargs) -> list:
    """On success of a PRM run, register the finished model directory it announced (``process_reward_model``)."""
    if job.kind != PRM_KIND:
        return []
    from rlcore.training.prm import read_prm_settings
    from webapp.jobs.models import JobArtifact
    from webapp.training.models import ProcessRewardModel

    spec = job.spec or {}
    registered = []
    for artifact in JobArtifact.objects.filter(job__in=_lineage(job), type="process_reward_model").order_by("-pk")[:1]:
        if not (Path(artifact.path) / "config.json").is_file():
            continue  # announced but gone: never register what cannot be loaded
        separator = read_prm_settings(artifact.path).get("step_separator") or spec.get("step_separator", "\n")
        model, _ = ProcessRewardModel.objects.get_or_create(job=job, path=artifact.path, defaults={
            "project": job.project, "name": job.title.removeprefix("process reward model: ")[:200],
            "backbone": spec.get("backbone", ""), "step_separator": separator,
            "snapshot_path": str(spec.get("step_snapshot", "")), "spec": spec,
            "metrics": {**(artifact.data.get("metrics") or {}), "data": artifact.data.get("data") or {},
                        "step": artifact.data.get("step")}})
        registered.append(model)
    return registered


def prm_delete(*, prm) -> None:
    """Hide it from the registry; servers of a spec that uses it refuse from their next request."""
    from webapp.rubrics.services import reward_spec_serving_withdraw
    from webapp.training.models import ProcessRewardModel

    ProcessRewardModel.objects.filter(pk=prm.pk).update(deleted_at=timezone.now())
    reward_spec_serving_withdraw(project=prm.project, path=prm.path,
                                 reason=f"process reward model {prm.name!r} was deleted from the registry")


# --- the policy registry -------------------------------------------------------------------------------------

def _policy_name(name: str, fallback: str) -> str:
    return ((name or "").strip() or fallback)[:200]


def _grpo_run_context(job: Job) -> dict[str, Any]:
    """What a run-made policy rests on: the reward spec version and prompt snapshot of its run."""
    from webapp.rubrics.models import RewardSpecVersion

    spec = job.spec or {}
    version = RewardSpecVersion.objects.filter(pk=spec.get("reward_spec_version_id"), spec__project=job.project).first()
    return {"reward_spec_version": version, "snapshot_path": str(spec.get("prompt_snapshot", ""))}


def register_trained_policies(sender, job: Job, **kwargs) -> list:
    """On success of a GRPO run, register the finished policy it announced (a ``policy`` artifact)."""
    if job.kind != GRPO_KIND:
        return []
    from webapp.jobs.models import JobArtifact
    from webapp.training.models import Policy, PolicySource

    registered = []
    for artifact in JobArtifact.objects.filter(job__in=_lineage(job), type="policy").order_by("-pk")[:1]:
        if not (Path(artifact.path) / "config.json").is_file():
            continue  # announced but gone: never register what cannot be loaded
        with transaction.atomic():
            policy, _ = Policy.objects.get_or_create(
                project=job.project, source=PolicySource.GRPO_RUN, endpoint_url="", location=artifact.path,
                defaults={"name": _policy_name(job.title.removeprefix("GRPO: "), f"GRPO run #{job.pk}"), "job": job,
                          "step": artifact.data.get("step"), "metrics": artifact.data.get("metrics") or {},
                          **_grpo_run_context(job)})
        registered.append(policy)
    return registered


def run_checkpoints(job: Job) -> list[tuple[int, Path]]:
    """(step, folder) of each saved ``checkpoints/checkpoint-<step>`` of a GRPO run, oldest first."""
    root = Path(job.output_dir or "/nonexistent") / "checkpoints"
    found = []
    for folder in root.glob("checkpoint-*"):
        step = folder.name.removeprefix("checkpoint-")
        if step.isdigit() and (folder / "config.json").is_file():
            found.append((int(step), folder))
    return sorted(found)


def _checkpoint_metrics(job: Job, step: int) -> dict[str, float]:
    """The run's logged figures at the checkpoint's step (the last value of each name at or before it)."""
    from webapp.jobs.models import MetricPoint

    metrics: dict[str, float] = {}
    for name, value in (MetricPoint.objects.filter(job__in=_lineage(job), step__lte=step, value__isnull=False)
                        .order_by("step", "pk").values_list("name", "value")):
        if name.startswith("reward") or name in ("kl", "entropy", "completions/mean_length"):
            metrics[name] = value
    return metrics


def _endpoint_key(api_key: str, api_key_env: str) -> tuple[str, str]:
    from webapp.endpoint_keys import api_key_problem, encrypt_api_key, key_env_problem

    api_key, api_key_env = (api_key or "").strip(), (api_key_env or "").strip()
    if api_key and api_key_env:
        raise ValidationError({"api_key": "Give the key or the environment variable that holds it, not both."})
    if api_key and (problem := api_key_problem(api_key)):
        raise ValidationError({"api_key": problem})
    if api_key_env and (problem := key_env_problem(api_key_env)):
        raise ValidationError({"api_key_env": problem})
    return (encrypt_api_key(api_key) if api_key else ""), api_key_env


def _local_policy_problem(project, location: str) -> str | None:
    from rlcore.generation.models import causal_lm_problem
    from webapp.training.model_locations import model_location_problem

    return model_location_problem(project=project, location=location) or causal_lm_problem(location)


@transaction.atomic
def policy_register(
    *, project, user, name: str = "", source: str, location: str = "", endpoint_url: str = "", api_key: str = "",
    api_key_env: str = "", job: Job | None = None, step: int | None = None,
):
    """Add a policy to ``project``'s registry: a run's checkpoint (``job`` + ``step``), a local model folder, a hub
    id, or an OpenAI-compatible endpoint (``endpoint_url`` + model name in ``location`` + key). Every check runs
    before the row is written, so a refused registration leaves nothing behind."""
    from rlcore.training.runtime import looks_like_local_path
    from webapp.training.models import Policy, PolicySource

    location, endpoint_url = (location or "").strip(), (endpoint_url or "").strip().rstrip("/")
    extra: dict[str, Any] = {}
    if source == PolicySource.CHECKPOINT:
        if job is None or job.project_id != project.pk or job.kind != GRPO_KIND:
            raise ValidationError({"job": "Pick a GRPO run of this project."})
        checkpoints = dict(run_checkpoints(job))
        if step not in checkpoints:
            have = ", ".join(str(s) for s in checkpoints) or "none left on disk"
            raise ValidationError({"step": f"GRPO run #{job.pk} has no checkpoint at step {step} "
                                           f"(checkpoints: {have}); pick one of those."})
        location = str(checkpoints[step])
        name = _policy_name(name, f"{job.title.removeprefix('GRPO: ')} @ step {step}")
        extra = {"job": job, "step": step, "metrics": _checkpoint_metrics(job, step), **_grpo_run_context(job)}
    elif source == PolicySource.FOLDER:
        if problem := _local_policy_problem(project, location):
            raise ValidationError({"location": problem})
        if not looks_like_local_path(location):
            raise ValidationError({"location": "Give an absolute model folder (or register a hub id as 'hub')."})
        location = str(Path(location).resolve())
        name = _policy_name(name, Path(location).name)
    elif source == PolicySource.HUB:
        if not location or looks_like_local_path(location) or location.count("/") > 1 or " " in location:
            raise ValidationError({"location": "Give a hub id such as Qwen/Qwen2.5-0.5B-Instruct."})
        name = _policy_name(name, location)
    elif source == PolicySource.ENDPOINT:
        if not endpoint_url.startswith(("http://", "https://")):
            raise ValidationError({"endpoint_url": "Give the API root, e.g. http://127.0.0.1:8000/v1."})
        if not location:
            raise ValidationError({"location": "Give the model name the endpoint serves (e.g. Qwen/Qwen2.5-7B)."})
        encrypted, env = _endpoint_key(api_key, api_key_env)
        extra = {"api_key_encrypted": encrypted, "api_key_env": env}
        name = _policy_name(name, f"{location} at {endpoint_url}")
    else:
        raise ValidationError({"source": "Register a checkpoint, a folder, a hub id or an endpoint."})
    existing = Policy.objects.filter(project=project, source=source, endpoint_url=endpoint_url, location=location,
                                     deleted_at__isnull=True).first()
    if existing is not None:
        raise ValidationError({"location": f"Already registered as '{existing.name}'."})
    # a deleted entry comes back (its generated responses still point at it) with the new settings
    policy, _ = Policy.objects.update_or_create(
        project=project, source=source, endpoint_url=endpoint_url, location=location,
        defaults={"created_by": user, "name": name, "deleted_at": None, **extra})
    return policy


def demo_policy_register(*, project):
    """Register the demo policy seed_demo built (if it is on disk) in ``project``; idempotent."""
    from rlcore.training.demo_policy import DEMO_POLICY_LABEL, demo_policy_label
    from webapp.training.demo import demo_policy_dir
    from webapp.training.models import Policy, PolicySource

    folder = demo_policy_dir()
    if not (demo_policy_label(folder) and (folder / "config.json").is_file()):
        return None
    policy, _ = Policy.objects.get_or_create(project=project, source=PolicySource.DEMO, endpoint_url="",
                                             location=str(folder), defaults={"name": DEMO_POLICY_LABEL})
    return policy


def policy_delete(*, policy) -> None:
    """Hide it from the registry; responses it generated keep pointing at it (provenance)."""
    type(policy).objects.filter(pk=policy.pk).update(deleted_at=timezone.now())


# --- generation: policies answer a prompt set; the answers become a new dataset version ----------------------

GENERATION_OUTPUT = "responses.jsonl"


def _policy_ref(policy, folder: Path) -> dict[str, Any]:
    """The rlcore PolicyRef of a registry entry; a stored endpoint key goes into a file the child deletes once
    read (never argv), as judges' keys do."""
    from webapp.training.models import PolicySource

    ref: dict[str, Any] = {"name": policy.name, "location": policy.location, "registry_id": policy.pk,
                           "step": policy.step}
    if policy.source == PolicySource.ENDPOINT:
        ref.update(kind="endpoint", base_url=policy.endpoint_url)
        if policy.api_key_encrypted:
            from webapp.endpoint_keys import decrypt_api_key

            key = decrypt_api_key(policy.api_key_encrypted)
            if key is None:
                raise ValidationError({"policies": f"The stored API key of policy '{policy.name}' cannot be "
                                                   "decrypted (SECRET_KEY changed?): register the endpoint again."})
            key_file = folder / f"policy-{policy.pk}.key"
            key_file.write_text(key)
            key_file.chmod(0o600)
            ref["api_key_file"] = str(key_file)
        elif policy.api_key_env:
            from webapp.endpoint_keys import key_env_problem

            if problem := key_env_problem(policy.api_key_env):  # the allow-list may have shrunk since
                raise ValidationError({"policies": f"Policy '{policy.name}': {problem}"})
            ref["api_key_env"] = policy.api_key_env
    else:
        ref["kind"] = "hub" if policy.source == PolicySource.HUB else "folder"
    return ref


def _policy_gone(policy) -> str | None:
    from webapp.training.models import PolicySource

    if policy.source in (PolicySource.ENDPOINT, PolicySource.HUB):
        return None
    if not (Path(policy.location) / "config.json").is_file():
        return (f"Policy '{policy.name}' is no longer on disk ({policy.location} is gone): pick another checkpoint "
                "or register the folder again.")
    return None


def generation_job_create(*, project, user, dataset, policies: list, settings: GenerationSettings,
                          round: int | None = None) -> Job:
    """Queue a generation job: ``policies`` (registry entries) answer ``dataset``'s prompts. Local models go to
    the gpu queue, endpoint-only jobs to the default queue. The responses become a new version of ``dataset``
    when the job ends (a cancelled or failed job's responses too, marked partial)."""
    from webapp.datasets.models import DatasetStatus
    from webapp.jobs.kinds import GENERATE_KIND, generate_argv
    from webapp.training.models import PolicySource

    if dataset.project_id != project.pk or dataset.status != DatasetStatus.READY:
        raise ValidationError({"dataset": "Pick a ready prompt set of this project."})
    if not policies:
        raise ValidationError({"policies": "Pick at least one registered policy."})
    for policy in policies:
        if policy.project_id != project.pk or policy.deleted_at is not None:
            raise ValidationError({"policies": f"Policy '{policy.name}' is not in this project's registry."})
        if problem := _policy_gone(policy):
            raise ValidationError({"policies": problem})
    prompts = list(dataset.prompts.order_by("source_line", "pk").only("pk", "text", "messages"))
    if not prompts:
        raise ValidationError({"dataset": f"Dataset '{dataset.name}' has no prompts."})
    local = any(p.source != PolicySource.ENDPOINT for p in policies)
    names = ", ".join(p.name for p in policies)
    with _OutputDirCleanup() as cleanup, transaction.atomic():
        job = job_create(project=project, user=user, kind=GENERATE_KIND, argv=[],
                         queue=Queue.GPU if local else Queue.DEFAULT, title=f"generate: {names} on {dataset.name}")
        folder = cleanup.path = Path(job.output_dir)
        folder.mkdir(parents=True, exist_ok=True)
        snapshot = folder / "prompts.jsonl"
        with snapshot.open("w") as out:  # the prompt's id is its key: the responses find their prompt by it
            for prompt in prompts:
                out.write(json.dumps({"id": prompt.pk, "prompt": prompt.messages or prompt.text}) + "\n")
        spec = _launch_spec(GenerationSpec, settings, prompts=snapshot, output=folder / GENERATION_OUTPUT,
                            policies=[_policy_ref(p, folder) for p in policies])
        spec_path = folder / "generation.json"
        spec_path.write_text(spec.model_dump_json(indent=2))
        job.argv = generate_argv(spec_path=str(spec_path))
        job.spec = {**json.loads(spec.model_dump_json(exclude={"policies": {"__all__": {"api_key_file"}}})),
                    "dataset_id": dataset.pk, "policy_ids": [p.pk for p in policies], "round": round}
        job.save(update_fields=["argv", "spec"])
        return job


def generation_rerun(*, job: Job, user) -> Job:
    """Run a stopped generation job again in its folder: it generates only what is missing (never duplicates)."""
    from webapp.training.models import Policy

    folder = Path(job.output_dir)
    spec = json.loads((folder / "generation.json").read_text())
    policies = {p.pk: p for p in Policy.objects.filter(project=job.project, pk__in=job.spec.get("policy_ids", []))}
    for ref in spec["policies"]:
        if (policy := policies.get(ref.get("registry_id"))) is None:
            raise ValidationError({"job": f"Policy '{ref.get('name')}' was removed from the registry."})
        if problem := _policy_gone(policy):
            raise ValidationError({"job": problem})
        ref.update({k: v for k, v in _policy_ref(policy, folder).items() if k == "api_key_file"})
    (folder / "generation.json").write_text(json.dumps(spec, indent=2))
    return job_create(project=job.project, user=user, kind=job.kind, argv=job.argv, spec=job.spec, queue=job.queue,
                      title=job.title, parent=job, output_dir=job.output_dir)


def generation_record(sender, job: Job, **kwargs):
    """When a generation job ends — succeeded, failed or cancelled — its JSONL enters the project as a version
    of the prompt set. A re-run in the same folder fills the same version; responses already there are skipped
    (one per prompt, generation key and sample index), so nothing is duplicated."""
    from webapp.jobs.kinds import GENERATE_KIND

    if job.kind != GENERATE_KIND:
        return None
    folder = Path(job.output_dir)
    for key_file in folder.glob("policy-*.key"):
        key_file.unlink(missing_ok=True)
    output = folder / GENERATION_OUTPUT
    if not output.is_file() or not output.stat().st_size:
        return None
    return _record_generated(job, output)


@transaction.atomic
def _record_generated(job: Job, output: Path):
    from datetime import datetime

    from rlcore.generation.run import existing_keys
    from rlcore.jsonl import read_jsonl_objects
    from webapp.datasets.models import Dataset, DatasetStatus, Prompt, Response
    from webapp.jobs.models import JobState
    from webapp.training.models import Policy

    existing_keys(output)  # drops a last line cut off by a kill, so every line below is whole
    lines = [row for _, row in read_jsonl_objects(output)]
    parent = Dataset.objects.select_for_update().get(pk=job.spec["dataset_id"])
    version = Dataset.objects.filter(generation__output=str(output)).first()
    if version is None:
        number = 1 + max([parent.version, *parent.versions.values_list("version", flat=True)])
        version = Dataset.objects.create(
            project=job.project, name=parent.name, source_format=parent.source_format, created_by=job.created_by,
            source_name=f"generated by job #{job.pk}", parent=parent, version=number, job=job,
            status=DatasetStatus.READY, generation={k: v for k, v in job.spec.items() if k != "prompts"},
            finished_at=timezone.now())
    prompts = {}
    for source in parent.prompts.filter(pk__in={int(row["prompt_key"]) for row in lines}):
        prompts[str(source.pk)], _ = Prompt.objects.get_or_create(
            dataset=version, source_line=source.source_line, defaults={
                "text": source.text, "messages": source.messages,
                "metadata": {**(source.metadata or {}), "source_prompt_id": source.pk}})
    policies = {p.pk: p for p in Policy.objects.filter(project=job.project)}
    Response.objects.bulk_create([Response(
        prompt=prompts[row["prompt_key"]], text=row["response"], model_name=row["policy"]["name"][:200],
        policy=policies.get(row["policy"].get("registry_id")), checkpoint_step=row["policy"].get("step"),
        round=job.spec.get("round"), sample_index=row["sample_index"], sampling=row["sampling"],
        generation_key=row["generation_key"], generated_at=datetime.fromisoformat(row["generated_at"]),
        metadata={"finish_reason": row.get("finish_reason"), "prompt_tokens": row.get("prompt_tokens"),
                  "truncated_tokens": row.get("truncated_tokens", 0), "job_id": job.pk},
    ) for row in lines if row["prompt_key"] in prompts], ignore_conflicts=True)
    expected = len(job.spec.get("policy_ids", [])) * job.spec.get("samples_per_prompt", 1) * parent.row_count
    count = Response.objects.filter(prompt__dataset=version).count()
    version.row_count = version.prompts.count()
    version.response_count = count
    version.partial = job.state != JobState.SUCCEEDED or count < expected
    version.job = job
    version.save(update_fields=["row_count", "response_count", "partial", "job"])
    return version
