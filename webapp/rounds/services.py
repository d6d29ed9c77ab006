"""Writes for rounds: create a round, build its head-to-head comparisons, store an over-optimisation report."""

from __future__ import annotations

from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction

from rlcore.analysis.checkpoint_scoring import OveroptScoreSettings
from rlcore.errors import UserError
from webapp.forms_util import pydantic_errors
from webapp.rounds.models import GoldKind, OveroptimizationReport, Round


def _policy(project, policy_id, field: str):
    from webapp.training.models import Policy

    policy = Policy.objects.filter(project=project, pk=policy_id, deleted_at__isnull=True).first()
    if policy is None:
        raise ValidationError({field: f"Policy {policy_id} is not a registered policy of this project."})
    return policy


@transaction.atomic
def round_create(*, project, user, policy_id: int, reference_id: int | None = None, dataset_id: int | None = None,
                 notes: str = "") -> Round:
    """The next round (number = last + 1). Without a reference it is judged against round k-1's policy;
    round 1 needs one (there is no round 0)."""
    from webapp.datasets.models import Dataset

    previous = Round.objects.select_for_update().filter(project=project).order_by("-number").first()
    policy = _policy(project, policy_id, "policy_id")
    if reference_id is None:
        if previous is None:
            raise ValidationError({"reference_id": "Round 1 needs a reference policy (there is no round 0 to compare with)."})
        reference = previous.policy
    else:
        reference = _policy(project, reference_id, "reference_id")
    if reference.pk == policy.pk:
        raise ValidationError({"reference_id": "The reference must be another policy than the round's own."})
    dataset = None
    if dataset_id is not None:
        dataset = Dataset.objects.filter(project=project, pk=dataset_id).first()
        if dataset is None:
            raise ValidationError({"dataset_id": f"Dataset {dataset_id} is not in this project."})
    number = (previous.number if previous else 0) + 1
    try:
        with transaction.atomic():
            return Round.objects.create(project=project, number=number, policy=policy, reference=reference,
                                        dataset=dataset, notes=notes, created_by=user)
    except IntegrityError:  # another request took the number between our read and write (the lock covers rows only)
        raise ValidationError({"policy_id": "Another round was created at the same time: try again."}) from None


def round_build_comparisons(*, round: Round, dataset_id: int | None = None, pairs_per_prompt: int = 1,
                            overlap: int = 1) -> int:
    """Head-to-head comparisons of the round's policy against its reference on the round's prompt set,
    through annotation's builder (same dedup and COMPARISONS_BUILD_MAX cap); the router and annotators take
    them from there as any other comparison."""
    from webapp.annotation.services import comparisons_build
    from webapp.datasets.models import Dataset

    dataset = round.dataset
    if dataset_id is not None:
        dataset = Dataset.objects.filter(project=round.project, pk=dataset_id).first()
    if dataset is None:
        raise ValidationError({"dataset_id": "Pick the prompt set both policies answered (the round has none)."})
    return comparisons_build(project=round.project, dataset=dataset, strategy="head_to_head",
                             pairs_per_prompt=pairs_per_prompt, overlap=overlap,
                             policies=(round.policy_id, round.reference_id))


def overopt_report_create(*, project, user, name: str, gold_kind: str, samples: list[dict], gold_name: str = "",
                          rule_components: list[str] | None = None, run_id: int | None = None,
                          round_id: int | None = None) -> OveroptimizationReport:
    """Compute (rlcore) and store the report of scored checkpoint samples; refusals name the row and field."""
    from pydantic import ValidationError as PydanticError

    from rlcore.analysis.overoptimization import OveroptSettings, SampleScore, analyse_overoptimization
    from webapp.jobs.models import Job
    from webapp.jobs.kinds import GRPO_KIND

    errors = {}
    if not name.strip():
        errors["name"] = "Name the report."
    if gold_kind not in GoldKind.values:
        errors["gold_kind"] = f"Unknown gold signal '{gold_kind}': choose one of {', '.join(GoldKind.values)}."
    run = round_ = None
    if run_id is not None and (run := Job.objects.filter(project=project, pk=run_id, kind=GRPO_KIND).first()) is None:
        errors["run_id"] = f"Job {run_id} is not a GRPO run of this project."
    if round_id is not None and (round_ := Round.objects.filter(project=project, pk=round_id).first()) is None:
        errors["round_id"] = f"Round {round_id} is not in this project."
    if errors:
        raise ValidationError(errors)
    rows = []
    for index, row in enumerate(samples):
        try:
            rows.append(SampleScore.model_validate(row))
        except PydanticError as exc:
            raise pydantic_errors(exc.errors(), field="samples", owner=lambda _loc: f"sample {index + 1}") from None
    try:
        settings = OveroptSettings(rule_components=rule_components or [])
        report = analyse_overoptimization(rows, settings)
    except UserError as exc:
        raise ValidationError({"samples": str(exc)}) from None
    return OveroptimizationReport.objects.create(
        project=project, run=run, round=round_, name=name.strip(), gold_kind=gold_kind, gold_name=gold_name,
        rule_components=settings.rule_components, samples=[r.model_dump(exclude_none=True) for r in rows],
        report=report.model_dump(), created_by=user)


SCORED_OUTPUT = "scored.jsonl"


def overopt_scoring_job_create(*, project, user, run_id: int, steps: list[int], dataset_id: int, gold_kind: str,
                               name: str = "", gold_spec_version_id: int | None = None,
                               gold_judge: dict | None = None, gold_judge_id: int | None = None,
                               round_id: int | None = None, settings: OveroptScoreSettings | None = None):
    """Queue the job (gpu queue) that scores checkpoints ``steps`` of GRPO run ``run_id`` on the held-out prompt
    set ``dataset_id``: generation, KL from the run's start policy, the run's own reward spec (proxy) and the gold.
    Its rows become an OveroptimizationReport when it succeeds (``record_overopt_scores``). Every check runs before
    the job is written; a checkpoint no longer on disk is refused by step.

    An LM-judge gold names a stored judge (``gold_judge_id``, a JudgeConfig): its endpoint settings go into the spec
    and its stored key is handed over as the judging jobs do it, in the job folder's key file (mode 0600) that the
    child deletes once read and ``remove_key_file`` removes when the job ends, never on argv or in the spec."""
    import json
    from pathlib import Path

    from pydantic import ValidationError as PydanticError

    from rlcore.analysis.checkpoint_scoring import GoldSpec, OveroptScoreSpec
    from webapp.datasets.models import Dataset
    from webapp.jobs.kinds import OVEROPT_SCORE_KIND, overopt_score_argv
    from webapp.jobs.models import Job, Queue
    from webapp.jobs.services import job_create
    from webapp.rubrics.models import RewardSpecVersion
    from webapp.jobs.kinds import GRPO_KIND
    from webapp.training.services import run_checkpoints

    errors = {}
    run = Job.objects.filter(project=project, pk=run_id, kind=GRPO_KIND).first()
    if run is None:
        raise ValidationError({"run_id": f"Job {run_id} is not a GRPO run of this project."})
    have = dict(run_checkpoints(run))
    if not steps:
        errors["steps"] = f"Pick checkpoints to score (on disk: {', '.join(map(str, have)) or 'none'})."
    elif gone := [s for s in steps if s not in have]:
        errors["steps"] = (f"Checkpoint(s) {', '.join(f'checkpoint-{s}' for s in gone)} of run {run.pk} are not on "
                           f"disk (deleted or never saved); on disk: {', '.join(map(str, have)) or 'none'}.")
    dataset = Dataset.objects.filter(project=project, pk=dataset_id).first()
    if dataset is None:
        errors["dataset_id"] = f"Dataset {dataset_id} is not in this project."
    if gold_kind not in GoldKind.values:
        errors["gold_kind"] = f"Unknown gold signal '{gold_kind}': choose one of {', '.join(GoldKind.values)}."
    gold_reward = None
    if gold_kind in (GoldKind.LM_JUDGE, GoldKind.REWARD_MODEL):
        version = RewardSpecVersion.objects.filter(pk=gold_spec_version_id, spec__project=project).first()
        if version is None:
            errors["gold_spec_version_id"] = ("Pick the reward spec version whose total is the gold (a reward_model "
                                              "component, or a rubric_judge for an LM judge).")
        else:
            gold_reward = version.definition
    if round_id is not None and not Round.objects.filter(project=project, pk=round_id).exists():
        errors["round_id"] = f"Round {round_id} is not in this project."
    judge_key = None
    if gold_kind == GoldKind.LM_JUDGE and gold_judge is None:
        gold_judge, judge_key, problem = _gold_judge(project, gold_judge_id)
        if problem:
            errors["gold_judge_id"] = problem
    if errors:
        raise ValidationError(errors)
    prompts = list(dataset.prompts.order_by("source_line", "pk").only("pk", "text", "messages"))
    if not prompts:
        raise ValidationError({"dataset_id": f"Dataset '{dataset.name}' has no prompts."})
    try:
        gold = GoldSpec(kind=gold_kind, reward=gold_reward, judge=gold_judge)
    except PydanticError as exc:
        raise pydantic_errors(exc.errors(), prefix="gold.") from None
    with transaction.atomic():
        job = job_create(project=project, user=user, kind=OVEROPT_SCORE_KIND, argv=[], queue=Queue.GPU,
                         title=f"score checkpoints {', '.join(map(str, sorted(steps)))} of {run.title or run.pk}")
        folder = Path(job.output_dir)
        folder.mkdir(parents=True, exist_ok=True)
        snapshot = folder / "prompts.jsonl"
        with snapshot.open("w") as out:  # the prompt's id is its key, as in generation jobs
            for prompt in prompts:
                out.write(json.dumps({"id": prompt.pk, "prompt": prompt.messages or prompt.text}) + "\n")
        if judge_key:
            from webapp.judging.configs import KEY_FILE, write_key_file

            write_key_file(folder, judge_key)
            gold = gold.model_copy(update={"api_key_file": folder / KEY_FILE})
        # the settings were checked where they came in, the gold above, the run's reward when the run launched
        spec = OveroptScoreSpec.model_validate({
            **(settings or OveroptScoreSettings()).model_dump(), "prompts": snapshot, "output": folder / SCORED_OUTPUT,
            "start_policy": run.spec["policy"], "reward": run.spec["reward_spec"], "gold": gold,
            "checkpoints": [{"path": str(have[s]), "step": s} for s in sorted(steps)]})
        spec_path = folder / "overopt_score.json"
        spec_path.write_text(spec.model_dump_json(indent=2))
        job.argv = overopt_score_argv(spec_path=str(spec_path))
        job.spec = {"run_id": run.pk, "steps": sorted(steps), "dataset_id": dataset.pk, "gold_kind": gold_kind,
                    "gold_spec_version_id": gold_spec_version_id, "gold_judge_id": gold_judge_id, "round_id": round_id,
                    "gold_name": _gold_name(gold_kind, gold_spec_version_id, gold_judge_id),
                    "name": name.strip() or f"{run.title or f'run {run.pk}'}: checkpoints {', '.join(map(str, sorted(steps)))}"}
        job.save(update_fields=["argv", "spec"])
        return job


def _gold_name(gold_kind: str, version_id: int | None, judge_id: int | None) -> str:
    """What the report says its gold is: the spec version (and judge) it was scored with, or the label source."""
    from webapp.judging.models import JudgeConfig
    from webapp.rubrics.models import RewardSpecVersion

    if gold_kind == GoldKind.HUMAN_WIN_RATE:
        return "people's labels on the annotation queue"
    version = RewardSpecVersion.objects.filter(pk=version_id).select_related("spec").first()
    name = f"{version.spec.name} v{version.number}" if version else ""
    if gold_kind == GoldKind.LM_JUDGE and (judge := JudgeConfig.objects.filter(pk=judge_id).first()):
        name += f" judged by {judge.name} ({judge.model})"
    return name


def _gold_judge(project, judge_id: int | None) -> tuple[dict | None, str | None, str]:
    """(OpenAICompatSettings fields without the key, the stored key to hand over, a problem or '') of the project's
    stored judge ``judge_id``; the key is decrypted here and goes only into the job's key file."""
    from webapp.judging.models import JudgeBackend, JudgeConfig
    from webapp.judging.configs import allowed_key_env, stored_key

    config = JudgeConfig.objects.filter(project=project, pk=judge_id).first() if judge_id is not None else None
    if config is None:
        return None, None, "Pick the stored LM judge whose verdicts are the gold (Judging page)."
    if config.backend == JudgeBackend.LOCAL_HF:
        return None, None, (f"Judge '{config.name}' is a local model; a gold judge must be an OpenAI-compatible "
                            "endpoint (the scoring job already holds the policies on the GPU).")
    try:
        key = stored_key(config)
        settings = {"base_url": config.endpoint, "model": config.model, "max_concurrency": config.max_concurrency,
                    "timeout_s": config.timeout_s, "max_retries": config.max_retries}
        if not key and config.api_key_env:
            settings["api_key_env"] = allowed_key_env(config)
    except ValidationError as exc:
        return None, None, " ".join(m for ms in exc.message_dict.values() for m in ms)
    return settings, key, ""


def record_overopt_scores(sender, job, **kwargs) -> None:
    """job_succeeded receiver: the scoring job's rows become its report, in the job's own transaction (a report
    that cannot be made fails the job with the reason). A checkpoint that vanished mid-run fails the job instead,
    so no report claims checkpoints it lacks; the rows scored before it stay in the job's folder."""
    import json
    from pathlib import Path

    from webapp.jobs.kinds import OVEROPT_SCORE_KIND

    if job.kind != OVEROPT_SCORE_KIND or OveroptimizationReport.objects.filter(scoring_job=job).exists():
        return
    path = Path(job.output_dir) / SCORED_OUTPUT
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    scored = {row["checkpoint"] for row in rows}
    asked = {f"checkpoint-{s}" for s in job.spec["steps"]} | {"start"}
    partial = ""
    if missing := sorted(asked - scored):
        partial = f"not scored: {', '.join(missing)}"
    with transaction.atomic():
        report = overopt_report_create(
            project=job.project, user=job.created_by, name=job.spec["name"], gold_kind=job.spec["gold_kind"],
            gold_name=job.spec.get("gold_name", ""),
            samples=rows, run_id=job.spec["run_id"], round_id=job.spec.get("round_id"),
            rule_components=_rule_components(job))
        report.scoring_job, report.partial = job, partial
        if report.gold_kind == GoldKind.HUMAN_WIN_RATE:
            report.human_gold = _send_to_annotation(job=job, rows=rows)
        report.save(update_fields=["scoring_job", "partial", "human_gold"])


HUMAN_GOLD_PROVENANCE = "overopt_score"


def _send_to_annotation(*, job, rows: list[dict]) -> dict:
    """Gold = human win rate: the job's samples become Responses on the held-out prompts themselves (so each
    checkpoint's i-th sample meets the start policy's i-th on the same Prompt row), each checkpoint and the start
    policy a registry Policy, and the head-to-head comparisons of each checkpoint vs ``start`` go onto the
    annotation queue. Returns what the report's human gold is computed from (selectors.overopt_human_gold)."""
    import hashlib
    import json
    from pathlib import Path

    from django.utils import timezone

    from webapp.annotation.services import comparisons_build
    from webapp.datasets.models import Dataset, Prompt, Response
    from webapp.jobs.models import Job
    from webapp.training.models import Policy, PolicySource

    spec = json.loads((Path(job.output_dir) / "overopt_score.json").read_text())
    run = Job.objects.get(pk=job.spec["run_id"])
    dataset = Dataset.objects.get(pk=job.spec["dataset_id"])
    project = job.project

    def policy_for(location: str, source: str, step: int | None, name: str) -> Policy:
        # An already registered checkpoint (or start model) is reused: one registry row per location.
        policy, _ = Policy.objects.get_or_create(
            project=project, source=source, endpoint_url="", location=location,
            defaults={"name": name, "job": run if source == PolicySource.CHECKPOINT else None, "step": step,
                      "reward_spec_version_id": (run.spec or {}).get("reward_spec_version_id")
                      if source == PolicySource.CHECKPOINT else None})
        return policy

    start_location = str(spec["start_policy"])
    start = policy_for(start_location, PolicySource.FOLDER if Path(start_location).is_dir() else PolicySource.HUB,
                       None, f"start policy of {run.title or f'run {run.pk}'}")
    policies = {"start": start}
    for ckpt in spec["checkpoints"]:
        label = f"checkpoint-{ckpt['step']}"
        policies[label] = policy_for(str(ckpt["path"]), PolicySource.CHECKPOINT, ckpt["step"],
                                     f"{run.title or f'run {run.pk}'} step {ckpt['step']}")
    prompts = set(Prompt.objects.filter(dataset=dataset).values_list("pk", flat=True))
    sampling = {k: spec.get(k) for k in ("temperature", "top_p", "max_new_tokens", "seed", "samples_per_prompt")}
    now = timezone.now()
    new = []
    for row in rows:
        prompt_id = int(row["prompt_id"])
        if prompt_id not in prompts or row["checkpoint"] not in policies:
            continue
        key = hashlib.sha256(f"{HUMAN_GOLD_PROVENANCE}:{job.pk}:{row['checkpoint']}".encode()).hexdigest()
        new.append(Response(prompt_id=prompt_id, text=row["completion"], policy=policies[row["checkpoint"]],
                            checkpoint_step=row["step"], sample_index=int(row["response_id"].rsplit("/", 1)[1]),
                            sampling=sampling, generation_key=key, generated_at=now,
                            model_name=policies[row["checkpoint"]].name,
                            metadata={"scoring_job": job.pk, "checkpoint": row["checkpoint"]}))
    Response.objects.bulk_create(new, ignore_conflicts=True)  # a re-recorded job adds nothing twice
    made = {}
    for label, policy in policies.items():
        if label == "start":
            continue
        comparisons_build(project=project, dataset=dataset, strategy="head_to_head",
                          pairs_per_prompt=spec.get("samples_per_prompt") or 1, policies=(policy.pk, start.pk))
        made[label] = {"policy_id": policy.pk, "comparison_ids": _head_to_head_ids(job, dataset, policy, start)}
    return {"start_policy_id": start.pk, "checkpoints": made}


def _head_to_head_ids(job, dataset, policy, start) -> list[int]:
    """The comparisons pairing this job's responses of ``policy`` with its ``start`` responses (also ones an
    earlier build made for the same responses: the builder never duplicates a pair)."""
    from webapp.annotation.models import Comparison
    from webapp.datasets.models import Response

    mine = set(Response.objects.filter(prompt__dataset=dataset, metadata__scoring_job=job.pk,
                                       policy__in=[policy, start]).values_list("pk", flat=True))
    return sorted(c.pk for c in Comparison.objects.filter(prompt__dataset=dataset).only("pk", "response_ids")
                  if len(c.response_ids) == 2 and set(c.response_ids) <= mine)


def _rule_components(job) -> list[str]:
    import json
    from pathlib import Path

    spec = json.loads((Path(job.output_dir) / "overopt_score.json").read_text())
    return [c["name"] for c in spec["reward"]["components"] if c["kind"] in ("rubric_rules", "verifier")]
