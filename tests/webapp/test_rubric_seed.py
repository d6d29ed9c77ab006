"""The demo data includes a rubric marked for annotation and a reward spec built from it."""

import pytest
from django.core.management import call_command

from webapp.projects.models import Project
from webapp.rubrics.models import RewardSpecVersion
from webapp.rubrics.selectors import annotation_rubric_for

pytestmark = pytest.mark.django_db


def test_it_seeds_a_demo_rubric_and_reward_spec_once(capsys):
    call_command("seed_demo")
    call_command("seed_demo")
    project = Project.objects.get(name__startswith="Demo")
    rubric_version = annotation_rubric_for(project)
    assert rubric_version.rubric.name == "Helpful answer" and rubric_version.number == 1
    spec_version = RewardSpecVersion.objects.get(spec__project=project)
    assert list(spec_version.rubric_versions.all()) == [rubric_version]
    assert spec_version.definition["components"][0]["rubric"]["criteria"][0]["name"] == "addresses_user"


def test_it_hands_saved_versions_back_as_rlcore_contracts():
    from rlcore.rewards import score_rows
    from rlcore.rubric import score_rubric
    from webapp.rubrics.selectors import reward_spec_contract, rubric_contract

    call_command("seed_demo")
    project = Project.objects.get(name__startswith="Demo")
    rubric = rubric_contract(version=annotation_rubric_for(project))
    assert score_rubric(rubric, ["Thank you, see www.example.com"])[0].vetoed_by == ["no_urls"]
    spec = reward_spec_contract(version=RewardSpecVersion.objects.get(spec__project=project))
    rows = score_rows(spec, [{"prompt": "p", "completion": "Thanks, you got it."}, {"prompt": "p", "completion": "x"}])
    assert rows[0].total > rows[1].total
