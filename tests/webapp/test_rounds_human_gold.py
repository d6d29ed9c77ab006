"""Gold = held-out human win rate (issue 11): a scoring job's samples become Responses on the held-out prompts
themselves, each checkpoint's head-to-head comparisons against the start policy go onto the annotation queue when
the job succeeds (real gpu worker), and labels posted through the API move the report's per-checkpoint gold exactly
as a Wilson interval written out in the test says; with too few labels no figure is shown, only how many are
needed."""

import pytest

from rlcore.analysis.checkpoint_scoring import OveroptScoreSettings
from tests.conftest import token_for, wait_for
from tests.webapp.test_rounds import hand_wilson
from tests.webapp.test_rounds_scoring_job import _grpo_run, _prompt_set
from webapp.annotation.models import Comparison
from webapp.datasets.models import Response
from webapp.jobs.models import Job, JobState
from webapp.rounds.models import OveroptimizationReport
from webapp.rounds.services import overopt_scoring_job_create
from webapp.training.models import Policy

pytestmark = pytest.mark.django_db(transaction=True)


def _label(client, people, user, prefer_checkpoint: bool | None, checkpoint_policy: int) -> None:
    """carol takes the next queue item and labels it: the checkpoint's response, the start's, or a tie."""
    headers = {"Authorization": f"Bearer {token_for(people.users[user])}"}
    base = f"/api/v1/projects/{people.project.pk}/annotation"
    item = client.post(f"{base}/next", {}, content_type="application/json", headers=headers).json()
    shown = [r["response_id"] for r in item["responses"]]
    owner = dict(Response.objects.filter(pk__in=shown).values_list("pk", "policy_id"))
    if prefer_checkpoint is None:
        choice = "tie"
    else:
        wanted = next(r for r in shown if (owner[r] == checkpoint_policy) == prefer_checkpoint)
        choice = "A" if shown[0] == wanted else "B"
    r = client.post(f"{base}/labels", {"assignment_id": item["assignment_id"], "choice": choice},
                    content_type="application/json", headers=headers)
    assert r.status_code == 201, r.content


def test_labels_posted_through_the_api_move_each_checkpoints_human_gold(client, people, celery_workers, settings,
                                                                        tmp_path):
    settings.OVEROPT_HUMAN_GOLD_MIN_LABELS = 4
    run = _grpo_run(people, settings, tmp_path)
    prompts = _prompt_set(people, tmp_path)
    job = overopt_scoring_job_create(project=people.project, user=people.users["bob"], run_id=run.pk, steps=[5],
                                     dataset_id=prompts.pk, gold_kind="human_win_rate",
                                     settings=OveroptScoreSettings(samples_per_prompt=2, max_new_tokens=5, seed=2))
    wait_for(lambda: Job.objects.get(pk=job.pk).is_finished, 180, 0.3, f"job {job.pk} to finish")
    job.refresh_from_db()
    assert job.state == JobState.SUCCEEDED, f"{job.error}\n{job.log_tail[-2000:]}"
    report = OveroptimizationReport.objects.get(scoring_job=job)

    # the samples hang off the held-out prompts themselves, by checkpoint policy, sample index kept
    checkpoint = Policy.objects.get(project=people.project, source="checkpoint", job=run, step=5)
    start = Policy.objects.get(pk=report.human_gold["start_policy_id"])
    assert start.location == run.spec["policy"]
    responses = Response.objects.filter(prompt__dataset=prompts)
    assert responses.filter(policy=checkpoint).count() == 6 and responses.filter(policy=start).count() == 6
    assert set(responses.values_list("sample_index", flat=True)) == {0, 1}
    comparisons = Comparison.objects.filter(pk__in=report.human_gold["checkpoints"]["checkpoint-5"]["comparison_ids"])
    assert comparisons.count() == 6  # 3 prompts x 2 samples, i-th vs i-th
    policy_of = dict(responses.values_list("pk", "policy_id"))
    for c in comparisons:
        assert sorted(policy_of[i] for i in c.response_ids) == sorted([checkpoint.pk, start.pk])
        assert len({Response.objects.get(pk=i).sample_index for i in c.response_ids}) == 1

    api = f"/api/v1/projects/{people.project.pk}/overoptimization/{report.pk}"
    headers = {"Authorization": f"Bearer {token_for(people.users['bob'])}"}
    gold = client.get(api, headers=headers).json()["human_gold"]["checkpoint-5"]
    assert (gold["n"], gold["needed"], gold["win_rate"], gold["low"]) == (0, 4, None, None)

    for prefer in (True, None, True):  # 3 labels: one short of the minimum, still no figure
        _label(client, people, "carol", prefer, checkpoint.pk)
    gold = client.get(api, headers=headers).json()["human_gold"]["checkpoint-5"]
    assert (gold["n"], gold["needed"], gold["win_rate"]) == (3, 1, None)
    client.force_login(people.users["bob"])
    page = client.get(f"/projects/{people.project.pk}/rounds/overoptimization/{report.pk}/").content.decode()
    assert "3 of 4 labels: 1 more needed for a win rate" in page and "win rate 0." not in page

    for prefer in (False, True, None):
        _label(client, people, "carol", prefer, checkpoint.pk)
    gold = client.get(api, headers=headers).json()["human_gold"]["checkpoint-5"]
    # 3 wins, 2 ties, 1 loss of 6: (3 + 2/2) / 6, Wilson on 4 of 6
    low, high = hand_wilson(4, 6)
    assert (gold["n"], gold["wins"], gold["ties"], gold["losses"], gold["needed"]) == (6, 3, 2, 1, 0)
    assert gold["win_rate"] == pytest.approx(4 / 6)
    assert (gold["low"], gold["high"]) == (pytest.approx(low), pytest.approx(high))

    html = client.get(f"/projects/{people.project.pk}/rounds/overoptimization/{report.pk}/").content.decode()
    assert f"win rate {4 / 6:.3f} [{low:.3f}, {high:.3f}], n=6 (3 wins, 2 ties, 1 losses)" in html
    assert "reference (the start policy)" in html


def _recorded_human_gold_job(people, settings, tmp_path, prompts, proxies: dict[str, float]):
    """An overopt_score job as the gpu worker leaves it (its spec file and scored rows, proxy planted to rise with
    the step), recorded by the real job_succeeded handler: Policies, Responses, comparisons on the queue."""
    import json

    from webapp.datasets.models import Prompt
    from webapp.jobs.kinds import OVEROPT_SCORE_KIND
    from webapp.rounds.services import SCORED_OUTPUT, record_overopt_scores
    from webapp.jobs.kinds import GRPO_KIND

    start = tmp_path / "start"
    start.mkdir()
    run = Job.objects.create(project=people.project, kind=GRPO_KIND, created_by=people.users["bob"],
                             state=JobState.SUCCEEDED, title="GRPO: planted", spec={"policy": str(start)})
    steps = [int(label.split("-")[1]) for label in proxies if label != "start"]
    job = Job.objects.create(project=people.project, kind=OVEROPT_SCORE_KIND, created_by=people.users["bob"],
                             state=JobState.SUCCEEDED, spec={"steps": steps, "name": "planted human gold",
                                                             "gold_kind": "human_win_rate", "run_id": run.pk,
                                                             "dataset_id": prompts.pk})
    out = settings.ARTIFACT_ROOT / "jobs" / f"overopt-{job.pk}"
    out.mkdir(parents=True)
    job.output_dir = str(out)
    job.save()
    (out / "overopt_score.json").write_text(json.dumps({
        "start_policy": str(start), "samples_per_prompt": 1,
        "checkpoints": [{"step": s, "path": str(tmp_path / f"checkpoint-{s}")} for s in steps],
        "reward": {"components": [{"kind": "rubric_rules", "name": "rule"}]}}))
    rows = [{"checkpoint": label, "step": 0 if label == "start" else int(label.split("-")[1]), "prompt_id": str(p),
             "response_id": f"{label}/{p}/0", "prompt": "q", "completion": f"{label} answer {p}",
             "proxy": proxy, "components": {"rule": 1.0}, "kl": 0.0 if label == "start" else 0.1, "tokens": 3}
            for label, proxy in proxies.items()
            for p in Prompt.objects.filter(dataset=prompts).order_by("pk").values_list("pk", flat=True)]
    (out / SCORED_OUTPUT).write_text("".join(json.dumps(r) + "\n" for r in rows))
    record_overopt_scores(sender=None, job=job)
    return OveroptimizationReport.objects.get(scoring_job=job)


def test_posted_human_labels_make_the_gold_peak_flag_and_the_gap_samples_appear(client, people, settings, tmp_path):
    settings.OVEROPT_HUMAN_GOLD_MIN_LABELS = 4
    prompts = _prompt_set(people, tmp_path, n=4)
    report = _recorded_human_gold_job(people, settings, tmp_path, prompts,
                                      {"start": 0.0, "checkpoint-5": 1.0, "checkpoint-10": 2.0})
    ckpt5 = report.human_gold["checkpoints"]["checkpoint-5"]["policy_id"]
    ckpt10 = report.human_gold["checkpoints"]["checkpoint-10"]["policy_id"]
    page_url = f"/projects/{people.project.pk}/rounds/overoptimization/{report.pk}/"
    client.force_login(people.users["bob"])
    page = client.get(page_url).content.decode()
    assert 'data-flagged="false"' in page.split('id="peak"')[1][:80]
    assert "No sample has both a proxy and a gold score." in page

    # people prefer checkpoint-5 over the start every time, and the start over checkpoint-10 every time
    headers = {"Authorization": f"Bearer {token_for(people.users['carol'])}"}
    base = f"/api/v1/projects/{people.project.pk}/annotation"
    for _ in range(8):
        item = client.post(f"{base}/next", {}, content_type="application/json", headers=headers).json()
        shown = [r["response_id"] for r in item["responses"]]
        owner = dict(Response.objects.filter(pk__in=shown).values_list("pk", "policy_id"))
        wanted = next(r for r in shown if owner[r] == ckpt5) if ckpt5 in owner.values() else \
            next(r for r in shown if owner[r] != ckpt10)
        r = client.post(f"{base}/labels", {"assignment_id": item["assignment_id"],
                                           "choice": "A" if shown[0] == wanted else "B"},
                        content_type="application/json", headers=headers)
        assert r.status_code == 201, r.content

    page = client.get(page_url).content.decode()
    peak = page.split('id="peak"')[1].split("</p>")[0]
    # by hand: 4 of 4 vs 0 of 4, Wilson half-widths as 1.96 s.e.; drop 1 is far beyond them
    l5, h5 = hand_wilson(4, 4)
    l10, h10 = hand_wilson(0, 4)
    threshold = 1.959963984540054 * (((h5 - l5) / 3.919927969) ** 2 + ((h10 - l10) / 3.919927969) ** 2) ** 0.5
    assert 'data-flagged="true"' in peak and "gold peaks at checkpoint-5" in peak and "by checkpoint-10" in peak
    assert f"(&gt; {threshold:.3g}, 1.96 combined s.e.)" in peak
    assert page.count('class="gap-sample"') == 8  # each checkpoint sample has its label; the start's have none
    first_gap = page.split('class="gap-sample"')[1]
    assert first_gap.startswith("><td>checkpoint-10</td>")  # highest proxy, lost: the largest gap
    assert "start/start/" in page.split('id="unlabelled"')[1].split("</span>")[0]
    rule = page.split('data-kind="rule_disagreement"')[1].split("</li>")[0]
    assert 'data-flagged="true"' in rule and "0% -&gt; 100%" in rule
    # the API gives the same recomputed view as the page
    api = client.get(f"/api/v1/projects/{people.project.pk}/overoptimization/{report.pk}",
                     headers={"Authorization": f"Bearer {token_for(people.users['bob'])}"}).json()
    assert api["report"]["peak"]["checkpoint"] == "checkpoint-5"
    assert len(api["report"]["gap_samples"]) == 8
