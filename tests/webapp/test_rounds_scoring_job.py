"""The checkpoint-scoring job (issue 11) against a real gpu worker: a GRPO run's checkpoints are generated from,
KL-measured and scored with the run's own spec and a gold reward model; the rows become the run's
OveroptimizationReport when the job succeeds. A deleted checkpoint is refused by name before anything runs."""

import json

import pytest
from django.core.exceptions import ValidationError

from rlcore.analysis.checkpoint_scoring import OveroptScoreSettings
from rlcore.training.tiny_models import build_tiny_causal_lm, build_tiny_reward_model
from tests.conftest import wait_for
from tests.rlcore.test_checkpoint_scoring import RUBRIC, _perturbed
from webapp.jobs.models import Job, JobState
from webapp.rounds.models import OveroptimizationReport
from webapp.rounds.services import overopt_scoring_job_create
from webapp.jobs.kinds import GRPO_KIND

pytestmark = pytest.mark.django_db(transaction=True)

PROXY = {"name": "proxy", "components": [{"kind": "rubric_rules", "name": "rules", "rubric": RUBRIC, "weight": 2.0}]}


def _grpo_run(people, settings, tmp_path):
    start = build_tiny_causal_lm(tmp_path / "start")
    job = Job.objects.create(project=people.project, kind=GRPO_KIND, created_by=people.users["bob"],
                             state=JobState.SUCCEEDED, title="GRPO: w answers")
    out = settings.ARTIFACT_ROOT / "jobs" / f"grpo-{job.pk}"
    job.output_dir = str(out)
    job.spec = {"policy": str(start), "reward_spec": PROXY}
    job.save()
    _perturbed(start, out / "checkpoints" / "checkpoint-5")
    return job


def _gold_spec_version(people, tmp_path):
    from webapp.rubrics.services import reward_spec_create

    rm = build_tiny_reward_model(tmp_path / "gold-rm", seed=3)
    return reward_spec_create(project=people.project, user=people.users["bob"], name="gold rm", definition={
        "name": "gold", "components": [{"kind": "reward_model", "name": "rm", "path": str(rm), "device": "cpu"}]})


def _prompt_set(people, tmp_path, n=3):
    from webapp.datasets.services import dataset_create, dataset_import_run

    path = tmp_path / "held-out.jsonl"
    path.write_text("".join(json.dumps({"prompt": f"hello w{i} question"}) + "\n" for i in range(n)))
    dataset = dataset_create(project=people.project, user=people.users["bob"], name="held-out", path=path)
    return dataset_import_run(dataset_id=dataset.pk)


def test_a_scoring_job_records_the_runs_report_when_it_succeeds(people, celery_workers, settings, tmp_path):
    run = _grpo_run(people, settings, tmp_path)
    prompts = _prompt_set(people, tmp_path)
    gold = _gold_spec_version(people, tmp_path)
    job = overopt_scoring_job_create(project=people.project, user=people.users["bob"], run_id=run.pk, steps=[5],
                                     dataset_id=prompts.pk, gold_kind="reward_model", gold_spec_version_id=gold.pk,
                                     settings=OveroptScoreSettings(samples_per_prompt=2, max_new_tokens=5, seed=2))
    assert job.queue == "gpu" and job.argv[:2] == ["analysis", "overopt-score"]
    wait_for(lambda: Job.objects.get(pk=job.pk).is_finished, 180, 0.3, f"job {job.pk} to finish")
    job.refresh_from_db()
    assert job.state == JobState.SUCCEEDED, f"{job.error}\n{job.log_tail[-2000:]}"
    report = OveroptimizationReport.objects.get(scoring_job=job)  # recorded with the success, not after it
    assert report.run_id == run.pk and report.partial == "" and report.gold_kind == "reward_model"
    assert report.rule_components == ["rules"]
    assert [c["checkpoint"] for c in report.report["checkpoints"]] == ["start", "checkpoint-5"]
    assert len(report.samples) == 12 and all(s["gold"] is not None for s in report.samples)
    assert {s["prompt_id"] for s in report.samples} == {str(p.pk) for p in prompts.prompts.all()}
    for s in report.samples:
        assert s["components"] == {"rules": 2.0 * ("w" in s["completion"])}
    start = [s for s in report.samples if s["checkpoint"] == "start"]
    assert all(s["kl"] == 0.0 for s in start)


def test_a_deleted_checkpoint_is_refused_before_the_job_is_written(people, settings, tmp_path):
    run = _grpo_run(people, settings, tmp_path)
    prompts = _prompt_set(people, tmp_path)
    with pytest.raises(ValidationError) as error:
        overopt_scoring_job_create(project=people.project, user=people.users["bob"], run_id=run.pk, steps=[5, 9],
                                   dataset_id=prompts.pk, gold_kind="human_win_rate")
    assert "checkpoint-9" in error.value.message_dict["steps"][0] and "on disk: 5" in error.value.message_dict["steps"][0]
    assert not Job.objects.filter(kind="overopt_score").exists()
