"""The run page in the design loop (issue 11): a GRPO run's page links the reward spec version it trained against,
the policy it produced and that policy's round; from the run (or a flagged sample of its report) "save a new
version and relaunch" is one step: the spec composer saves, then opens the GRPO launch form as a clone of the run
with the new version chosen."""

import re

import pytest

from webapp.rubrics.contracts import dump_yaml
from tests.webapp.rounds_helpers import planted_samples
from webapp.jobs.models import Job, JobState
from webapp.rounds.services import overopt_report_create, round_create
from webapp.rubrics.models import RewardSpecVersion
from webapp.rubrics.services import reward_spec_create
from webapp.jobs.kinds import GRPO_KIND
from webapp.training.services import policy_register

pytestmark = pytest.mark.django_db(transaction=True)

PROXY = {"name": "proxy", "components": [{"kind": "length_penalty", "name": "len", "max_length": 64, "cache_length": 16, "weight": 1.0}]}


def _run_in_a_round(people):
    bob = people.users["bob"]
    version = reward_spec_create(project=people.project, user=bob, name="proxy", definition=PROXY)
    run = Job.objects.create(project=people.project, kind=GRPO_KIND, created_by=bob, state=JobState.SUCCEEDED,
                             title="GRPO: short answers",
                             spec={"policy": "org/start", "reward_spec_version_id": version.pk, "dataset_id": None})
    produced = policy_register(project=people.project, user=bob, source="hub", location="org/produced",
                               name="produced")
    produced.job, produced.reward_spec_version = run, version
    produced.save()
    start = policy_register(project=people.project, user=bob, source="hub", location="org/start", name="start")
    r = round_create(project=people.project, user=bob, policy_id=produced.pk, reference_id=start.pk)
    return run, version, produced, r


def test_the_run_page_links_its_spec_version_policy_and_round(client, people):
    run, version, produced, r = _run_in_a_round(people)
    client.force_login(people.users["bob"])
    page = client.get(f"/projects/{people.project.pk}/jobs/{run.pk}/").content.decode()
    links = page[page.index('id="job-loop-links"'):]
    links = links[:links.index("</p>")]
    assert f'/reward-specs/{version.spec_id}/v/{version.number}/' in links and "proxy v1" in links
    assert "produced" in links and f"/rounds/{r.number}/" in links and "Round 1" in links
    assert f"/rounds/runs/{run.pk}/overoptimization/" in links
    assert f"/reward-specs/{version.spec_id}/edit/?relaunch={run.pk}" in links
    other = Job.objects.create(project=people.project, kind="reward_model", created_by=people.users["bob"])
    assert 'id="job-loop-links"' not in client.get(f"/projects/{people.project.pk}/jobs/{other.pk}/").content.decode()


def test_saving_from_a_flagged_sample_relaunches_the_run_as_a_clone_with_the_new_version(client, people):
    run, version, _, _ = _run_in_a_round(people)
    report = overopt_report_create(project=people.project, user=people.users["bob"], name="planted",
                                   gold_kind="lm_judge", samples=planted_samples(), run_id=run.pk)
    client.force_login(people.users["bob"])
    detail = client.get(f"/projects/{people.project.pk}/rounds/overoptimization/{report.pk}/").content.decode()
    relaunch = re.search(r'class="relaunch" href="([^"]+)"', detail).group(1)
    assert relaunch == f"/projects/{people.project.pk}/reward-specs/{version.spec_id}/edit/?relaunch={run.pk}"
    editor = client.get(relaunch).content.decode()
    assert f'name="relaunch" value="{run.pk}"' in editor
    changed = {**PROXY, "components": [{**PROXY["components"][0], "weight": 0.5}]}
    saved = client.post(relaunch.split("?")[0], {"yaml": dump_yaml(changed), "note": "pay less for length",
                                                 "relaunch": str(run.pk)})
    new = RewardSpecVersion.objects.get(spec_id=version.spec_id, number=2)
    assert saved.status_code == 302, saved.content.decode()[:2000]
    assert saved["Location"] == (f"/projects/{people.project.pk}/training/grpo/new/"
                                 f"?clone={run.pk}&reward_spec_version={new.pk}")
    form = client.get(saved["Location"]).content.decode()
    assert re.search(rf'<option value="{new.pk}"[^>]*selected', form), "the new version is chosen"
    assert "short answers (clone)" in form
    plain = client.post(relaunch.split("?")[0], {"yaml": dump_yaml({**changed, "components": [
        {**PROXY["components"][0], "weight": 0.25}]})})  # without relaunch: the spec page, as before
    assert plain["Location"] == f"/projects/{people.project.pk}/reward-specs/{version.spec_id}/"
