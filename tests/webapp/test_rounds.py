"""Rounds (issue 11): head-to-head comparisons of a round's policy against its reference, and win rates with
a Wilson interval (ties as half a win) per prompt category, checked against a hand computation."""

import math

import pytest

from tests.webapp.rubric_helpers import api_client
from webapp.annotation.models import Comparison, LabelSource, PreferenceLabel
from webapp.datasets.models import Dataset, Prompt, Response
from webapp.routing.models import PromptTag
from webapp.training.models import Policy

pytestmark = pytest.mark.django_db


def hand_wilson(successes, n, z=1.959963984540054):
    """Wilson (1927) score interval, written out from the formula."""
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return centre - half, centre + half


@pytest.fixture
def answered(people):
    """Prompts 0..5 (0-2 tagged 'math', 3-5 'chat'), each answered twice by 'round-1' and once by 'start'."""
    project, alice = people.project, people.users["alice"]
    dataset = Dataset.objects.create(project=project, name="prompts", source_format="jsonl", status="ready",
                                     created_by=alice)
    policy = Policy.objects.create(project=project, name="round-1", source="folder", location="/models/r1")
    start = Policy.objects.create(project=project, name="start", source="folder", location="/models/start")
    other = Policy.objects.create(project=project, name="other", source="folder", location="/models/other")
    prompts = []
    for i in range(6):
        p = Prompt.objects.create(dataset=dataset, source_line=i + 1, text=f"Q{i}")
        PromptTag.objects.create(prompt=p, tags=["math" if i < 3 else "chat"])
        for k in range(2):
            Response.objects.create(prompt=p, text=f"new {i}.{k}", policy=policy, sample_index=k)
        Response.objects.create(prompt=p, text=f"old {i}", policy=start, sample_index=0)
        Response.objects.create(prompt=p, text=f"other {i}", policy=other, sample_index=0)
        prompts.append(p)
    return type("Answered", (), {"dataset": dataset, "policy": policy, "start": start, "other": other,
                                 "prompts": prompts})


def test_it_numbers_rounds_and_builds_head_to_head_pairs_only(client, people, answered):
    call = api_client(client, people.users["bob"])
    base = f"/api/v1/projects/{people.project.pk}/rounds"
    first = call("post", base, {"policy_id": answered.policy.pk, "reference_id": answered.start.pk,
                                "dataset_id": answered.dataset.pk})
    assert first.status_code == 201, first.content
    assert first.json()["number"] == 1
    built = call("post", f"{base}/1/comparisons", {"pairs_per_prompt": 3})
    assert built.status_code == 201, built.content
    # one 'start' response per prompt: one pair each, never with 'other', never within a policy
    assert built.json()["created"] == 6
    policy_of = dict(Response.objects.values_list("id", "policy_id"))
    for c in Comparison.objects.filter(project=people.project):
        assert [policy_of[i] for i in c.response_ids] == [answered.policy.pk, answered.start.pk]
    again = call("post", f"{base}/1/comparisons", {})
    assert again.json()["created"] == 0  # a rebuild never duplicates
    second = call("post", base, {"policy_id": answered.other.pk})
    assert second.status_code == 201 and second.json()["number"] == 2
    assert second.json()["reference_id"] == answered.policy.pk  # default: round k-1's policy


def test_it_refuses_a_round_without_a_reference_or_against_itself(client, people, answered):
    call = api_client(client, people.users["bob"])
    base = f"/api/v1/projects/{people.project.pk}/rounds"
    answer = call("post", base, {"policy_id": answered.policy.pk})
    assert answer.status_code == 422
    assert answer.json()["detail"][0]["field"] == "reference_id"
    answer = call("post", base, {"policy_id": answered.policy.pk, "reference_id": answered.policy.pk})
    assert answer.status_code == 422 and "another policy" in answer.json()["detail"][0]["message"]
    assert call("post", base, {"policy_id": 10 ** 6, "reference_id": answered.start.pk}).status_code == 422
    viewer = api_client(client, people.users["dave"])
    assert viewer("post", base, {"policy_id": answered.policy.pk, "reference_id": answered.start.pk}).status_code == 403


def test_head_to_head_build_names_the_missing_responses(client, people, answered):
    lonely = Policy.objects.create(project=people.project, name="lonely", source="folder", location="/models/l")
    call = api_client(client, people.users["bob"])
    answer = call("post", f"/api/v1/projects/{people.project.pk}/comparisons/build",
                  {"dataset_id": answered.dataset.pk, "strategy": "head_to_head",
                   "policies": [lonely.pk, answered.start.pk]})
    assert answer.status_code == 422
    assert answer.json()["detail"][0]["field"] == "policies"
    assert "generate with both" in answer.json()["detail"][0]["message"]


def test_win_rates_match_a_hand_wilson_computation_per_category(client, people, answered):
    call = api_client(client, people.users["bob"])
    base = f"/api/v1/projects/{people.project.pk}/rounds"
    call("post", base, {"policy_id": answered.policy.pk, "reference_id": answered.start.pk,
                        "dataset_id": answered.dataset.pk})
    call("post", f"{base}/1/comparisons", {})
    comparisons = list(Comparison.objects.filter(project=people.project).order_by("prompt__source_line"))
    # canonical order is [round-1, start]: 'a' is a win for the round's policy
    human = ["a", "a", "tie", "b", "a", "b"]
    lm = ["a", "b", "b", "b", "tie", "b"]
    for c, h, m in zip(comparisons, human, lm):
        PreferenceLabel.objects.create(comparison=c, source=LabelSource.HUMAN, annotator=people.users["carol"],
                                       choice=h, strength=0 if h == "tie" else 1)
        PreferenceLabel.objects.create(comparison=c, source=LabelSource.LM, choice=m, strength=0 if m == "tie" else 1)
    PreferenceLabel.objects.create(comparison=comparisons[0], source=LabelSource.ADJUDICATION,
                                   annotator=people.users["bob"], choice="b", strength=1)
    answer = call("get", f"{base}/1/win-rates")
    assert answer.status_code == 200, answer.content
    body = answer.json()
    overall = body["overall"]["human"]
    # 3 wins, 1 tie, 2 losses of 6: (3 + 0.5) / 6
    assert (overall["n"], overall["wins"], overall["ties"], overall["losses"]) == (6, 3, 1, 2)
    assert overall["win_rate"] == pytest.approx(3.5 / 6)
    low, high = hand_wilson(3.5, 6)
    assert (overall["low"], overall["high"]) == (pytest.approx(low), pytest.approx(high))
    assert body["overall"]["lm"]["win_rate"] == pytest.approx(1.5 / 6)
    assert body["dropped"] == {"adjudications (not a rater)": 1}
    math_row = next(c for c in body["categories"] if c["category"] == "math")
    # math = prompts 0-2: human a, a, tie -> 2.5 of 3
    assert math_row["human"]["win_rate"] == pytest.approx(2.5 / 3)
    assert (math_row["human"]["low"], math_row["human"]["high"]) == tuple(pytest.approx(x) for x in hand_wilson(2.5, 3))
    chat_row = next(c for c in body["categories"] if c["category"] == "chat")
    assert chat_row["human"]["win_rate"] == pytest.approx(1 / 3)

    client.force_login(people.users["dave"])
    page = client.get(f"/projects/{people.project.pk}/rounds/1/")
    assert page.status_code == 200
    html = page.content.decode()
    assert 'data-win-rate="0.5833"' in html and "1 tied" in html and "a tie counts as half a win" in html
