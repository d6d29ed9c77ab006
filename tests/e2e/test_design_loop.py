"""The design loop end to end over real HTTP against real workers (issue 11): train a tiny GRPO policy -> it is
registered -> it and the start policy answer a prompt set (generation job) -> a round builds head-to-head
comparisons -> people label some (API), the loopback LM judge labels the rest (routing plan, LM labelling job) ->
the round's win rates, human and LM, match a Wilson interval computed here from the stored labels."""

import json

import httpx
import pytest

from rlcore.judges.testing_server import ChatCompletionsServer, prefers_keyword
from rlcore.training import tiny_models
from tests.conftest import token_for, wait_for
from tests.webapp.test_rounds import hand_wilson
from webapp.annotation.models import Comparison, LabelSource, PreferenceLabel
from webapp.datasets.models import Response
from webapp.jobs.models import Job, JobState
from webapp.training.models import Policy

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.worker]
RULES = {"name": "w", "criteria": [{"name": "has_w", "rule": {"kind": "regex", "pattern": "w"}}]}


def _client(app_server, people, user):
    return httpx.Client(base_url=f"{app_server}/api/v1/projects/{people.project.pk}",
                        headers={"Authorization": f"Bearer {token_for(people.users[user])}"}, timeout=60)


def _finished(job_id, timeout):
    wait_for(lambda: Job.objects.get(pk=job_id).is_finished, timeout, 0.5, f"job {job_id} to finish")
    job = Job.objects.get(pk=job_id)
    assert job.state == JobState.SUCCEEDED, f"job {job_id} {job.state}: {job.error}\n{job.log_tail[-3000:]}"
    return job


def _import(api, tmp_path, name, n):
    source = tmp_path / f"{name}.jsonl"
    source.write_text("".join(json.dumps({"prompt": f"hello w{i} question"}) + "\n" for i in range(n)))
    with source.open("rb") as handle:
        created = api.post("/datasets", files={"file": (f"{name}.jsonl", handle)},
                           data={"background": "false", "name": name})
    assert created.status_code == 201, created.text
    return created.json()["id"]


def _counts(labels, sides):
    values = [0.5 if choice == "tie" else float(choice == sides[cid]) for cid, choice in labels]
    return sum(v == 1.0 for v in values), values.count(0.5), len(values)


def test_the_loop_from_a_trained_policy_to_a_win_rate_with_its_interval(app_server, celery_workers, people, tmp_path):
    with _client(app_server, people, "bob") as bob, _client(app_server, people, "carol") as carol:
        train_set = _import(bob, tmp_path, "train", 16)
        held_out = _import(bob, tmp_path, "held-out", 6)
        spec = bob.post("/reward-specs", json={"name": "w", "definition": {"name": "w", "components": [
            {"kind": "rubric_rules", "name": "rules", "rubric": RULES, "weight": 1.0}]}})
        assert spec.status_code == 201, spec.text
        start_path = tiny_models.build_tiny_causal_lm(tmp_path / "start")
        grpo = bob.post("/training/grpo", json={
            "dataset_id": train_set, "reward_spec_version_id": spec.json()["id"], "policy": str(start_path),
            "name": "tiny", "spec": {"max_steps": 2, "per_device_train_batch_size": 8, "num_generations": 4,
                                     "max_completion_length": 6, "learning_rate": 1e-5, "steps_per_generation": 2}})
        assert grpo.status_code == 201, grpo.text
        run = _finished(grpo.json()["id"], 150)

        # registered by the run itself, beside the start policy a designer registers
        trained = Policy.objects.get(project=people.project, source="grpo_run", job=run)
        start = bob.post("/policies", json={"source": "folder", "location": str(start_path), "name": "start"})
        assert start.status_code == 201, start.text
        start_id = start.json()["id"]

        generated = bob.post("/generation", json={"dataset_id": held_out, "policy_ids": [trained.pk, start_id],
                                                  "round": 1, "spec": {"max_new_tokens": 5, "seed": 3}})
        assert generated.status_code == 201, generated.text
        _finished(generated.json()["id"], 120)
        version = bob.get(f"/datasets/{held_out}/versions").json()[-1]
        assert version["version"] == 2 and version["job_id"] == generated.json()["id"]
        answers = Response.objects.filter(prompt__dataset_id=version["id"])
        assert answers.filter(policy=trained).count() == 6 and answers.filter(policy_id=start_id).count() == 6

        made = bob.post("/rounds", json={"policy_id": trained.pk, "reference_id": start_id,
                                         "dataset_id": version["id"]})
        assert made.status_code == 201, made.text
        built = bob.post("/rounds/1/comparisons", json={})
        assert built.json() == {"created": 6}
        policy_of = dict(answers.values_list("pk", "policy_id"))
        sides = {c.pk: "a" if policy_of[c.response_ids[0]] == trained.pk else "b"
                 for c in Comparison.objects.filter(project=people.project)}

        for k in range(3):  # people label three: the trained policy, a tie, the start policy
            item = carol.post("/annotation/next").json()
            mine = next(r["letter"] for r in item["responses"] if policy_of[r["response_id"]] == trained.pk)
            theirs = next(r["letter"] for r in item["responses"] if r["letter"] != mine)
            choice = [mine, "tie", theirs][k]
            assert carol.post("/annotation/labels", json={"assignment_id": item["assignment_id"],
                                                          "choice": choice}).status_code == 201

        with ChatCompletionsServer(prefers_keyword("w")) as server:  # the LM judge labels what people left
            judge = bob.post("/judges", json={"name": "loopback", "endpoint": server.base_url, "model": "judge-1",
                                              "max_concurrency": 4, "timeout_s": 10}).json()
            plan = bob.post("/routing/plans", json={"budget": "0", "strategy": "uncertainty"}).json()
            assert plan["n_lm"] == 3, plan
            assert bob.post(f"/routing/plans/{plan['id']}/approve",
                            json={"judge_config_id": judge["id"]}).status_code == 200
            wait_for(lambda: "lm_pending" not in bob.get(f"/routing/plans/{plan['id']}").json()["decision_counts"],
                     60, 0.5, "the LM labels")

        rates = bob.get("/rounds/1/win-rates").json()
        for source, key in ((LabelSource.HUMAN, "human"), (LabelSource.LM, "lm")):
            labels = list(PreferenceLabel.objects.filter(comparison_id__in=sides, source=source)
                          .values_list("comparison_id", "choice"))
            wins, ties, n = _counts(labels, sides)
            assert n >= 1 and rates["overall"][key]["n"] == n
            low, high = hand_wilson(wins + ties / 2, n)
            got = rates["overall"][key]
            assert (got["wins"], got["ties"]) == (wins, ties)
            assert got["win_rate"] == pytest.approx((wins + ties / 2) / n)
            assert (got["low"], got["high"]) == (pytest.approx(low), pytest.approx(high))
        assert (rates["overall"]["human"]["wins"], rates["overall"]["human"]["ties"]) == (1, 1)
