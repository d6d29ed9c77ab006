"""Over-optimisation reports (issue 11) on the planted case: a spec that pays for length, a gold judge that
does not. The API stores the report; the page flags the peak and the length symptom and lists the gaps."""

import pytest

from tests.webapp.rounds_helpers import planted_samples
from tests.webapp.rubric_helpers import api_client
from webapp.rounds.models import OveroptimizationReport

pytestmark = pytest.mark.django_db


def test_it_flags_the_peak_and_the_length_symptom(client, people):
    call = api_client(client, people.users["bob"])
    answer = call("post", f"/api/v1/projects/{people.project.pk}/overoptimization",
                  {"name": "length run", "gold_kind": "lm_judge", "gold_name": "content judge",
                   "rule_components": ["format"], "samples": planted_samples()})
    assert answer.status_code == 201, answer.content
    report = answer.json()["report"]
    assert report["peak"]["flagged"] and report["peak"]["checkpoint"] == "checkpoint-200"
    symptoms = {s["kind"]: s for s in report["symptoms"]}
    assert symptoms["length"]["flagged"] and symptoms["dominance"]["component"] == "length_bonus"
    assert symptoms["rule_disagreement"]["flagged"]
    stored = OveroptimizationReport.objects.get(pk=answer.json()["id"])
    assert len(stored.samples) == 40 and stored.rule_components == ["format"]

    client.force_login(people.users["dave"])
    page = client.get(f"/projects/{people.project.pk}/rounds/overoptimization/{stored.pk}/")
    assert page.status_code == 200
    html = page.content.decode()
    assert 'id="peak-line"' in html and 'data-kind="length" data-flagged="true"' in html
    assert html.count('class="gap-sample"') == 20
    assert "gold peaks at checkpoint-200" in html


def test_it_refuses_a_bad_sample_naming_it(client, people):
    call = api_client(client, people.users["bob"])
    rows = planted_samples()
    del rows[3]["proxy"]
    answer = call("post", f"/api/v1/projects/{people.project.pk}/overoptimization",
                  {"name": "x", "gold_kind": "lm_judge", "samples": rows})
    assert answer.status_code == 422
    assert answer.json()["detail"] == [{"field": "samples", "message": "sample 4: proxy: Field required"}]
    answer = call("post", f"/api/v1/projects/{people.project.pk}/overoptimization",
                  {"name": "x", "gold_kind": "oracle", "samples": planted_samples()[:8]})
    assert answer.status_code == 422 and answer.json()["detail"][0]["field"] == "gold_kind"
    answer = call("post", f"/api/v1/projects/{people.project.pk}/overoptimization",
                  {"name": "x", "gold_kind": "lm_judge", "samples": planted_samples()[:8]})
    assert answer.status_code == 422 and "only one checkpoint" in answer.json()["detail"][0]["message"]
    assert not OveroptimizationReport.objects.exists()


def test_a_flagged_sample_opens_first_in_the_rubric_editors_live_preview(client, people):
    from webapp.rounds.services import overopt_report_create

    report = overopt_report_create(project=people.project, user=people.users["bob"], name="length run",
                                   gold_kind="lm_judge", samples=planted_samples())
    top = report.report["gap_samples"][0]
    client.force_login(people.users["bob"])
    detail = client.get(f"/projects/{people.project.pk}/rounds/overoptimization/{report.pk}/").content.decode()
    link = f"/projects/{people.project.pk}/rubrics/new/?pinned=overopt:{report.pk}:0"
    assert f'href="{link}"' in detail
    editor = client.get(link).content.decode()
    assert f'name="pinned" value="overopt:{report.pk}:0"' in editor
    # the live preview (what the editor posts while the designer types) scores the flagged sample first
    form = {"name": "Concise", "aggregation": "weighted_mean", "saturation": "3", "description": "",
            "criteria[0].name": "short", "criteria[0].weight": "1", "criteria[0].veto_cap": "0",
            "criteria[0].pass_threshold": "0.5", "criteria[0].rule.kind": "length", "criteria[0].rule.max": "200",
            "pinned": f"overopt:{report.pk}:0"}
    check = client.post(f"/projects/{people.project.pk}/rubrics/check/", form).content.decode()
    assert 'id="preview-table"' in check
    first_row = check.split('<tr data-response="', 2)[1]
    assert first_row.startswith(f"flagged {top['checkpoint']} {top['prompt_id']}")
    assert top["completion"][:40] in first_row
    # a reference to nothing pins nothing, and never fails
    assert client.post(f"/projects/{people.project.pk}/rubrics/check/",
                       {**form, "pinned": "overopt:999999:0"}).status_code == 200
