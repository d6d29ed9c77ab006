"""The annotation pages: workbench fragments, safe rendering, agreement against hand-computed values."""

import json

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

from tests.conftest import token_for
from webapp.annotation.models import Comparison, PreferenceLabel
from webapp.annotation.services import comparisons_build, lm_label_create
from webapp.datasets.models import Dataset


def _dataset(client, people, rows) -> Dataset:
    content = "".join(json.dumps(r) + "\n" for r in rows).encode()
    r = client.post(f"/api/v1/projects/{people.project.pk}/datasets", {"file": SimpleUploadedFile("d.jsonl", content)},
                    headers={"Authorization": f"Bearer {token_for(people.users['alice'])}"})
    assert r.status_code == 201, r.content
    return Dataset.objects.get(pk=r.json()["id"])


@pytest.mark.django_db
def test_it_renders_model_output_safely_and_chat_as_chat(client, people):
    evil = '<script>alert(1)</script><img src=x onerror=alert(2)> **bold** [x](javascript:alert(3))\n\n```py\nprint(1)\n```'
    dataset = _dataset(client, people, [{"prompt": [{"role": "system", "content": "Be safe"},
                                                    {"role": "user", "content": "Say <b>hi</b>"}],
                                         "responses": [evil, "plain"]}])
    comparisons_build(project=people.project, dataset=dataset)
    client.force_login(people.users["carol"])
    page = client.get(f"/projects/{people.project.pk}/annotate/").content.decode()
    assert "<script>alert" not in page and "<img" not in page and 'href="javascript' not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page  # shown as text, never run
    assert "<strong>bold</strong>" in page and '<code class="language-py">print(1)' in page
    assert 'class="turn turn-system"' in page and 'class="turn turn-user"' in page
    assert "Say &lt;b&gt;hi&lt;/b&gt;" in page


@pytest.mark.django_db
def test_it_labels_and_serves_the_next_item_as_a_fragment(client, people):
    dataset = _dataset(client, people, [{"prompt": f"q{i}", "responses": ["x", "y"]} for i in range(2)])
    comparisons_build(project=people.project, dataset=dataset)
    client.force_login(people.users["carol"])
    page = client.get(f"/projects/{people.project.pk}/annotate/").content.decode()
    assert 'id="label-form"' in page and "<html" in page
    first = PreferenceLabel.objects.none()
    assignment_id = people.users["carol"].assignments.get().pk
    r = client.post(f"/projects/{people.project.pk}/annotate/label/",
                    {"assignment_id": assignment_id, "choice": "A", "strength": "2", "rationale": "clearer"},
                    headers={"HX-Request": "true"})
    fragment = r.content.decode()
    assert r.status_code == 200 and "<html" not in fragment and 'id="item"' in fragment
    label = PreferenceLabel.objects.get()
    assert (label.strength, label.rationale) == (2, "clearer") and first.count() == 0
    assert people.users["carol"].assignments.filter(status="active").count() == 1
    r = client.post(f"/projects/{people.project.pk}/annotate/undo/", headers={"HX-Request": "true"})
    assert "withdrawn" in r.content.decode() and not PreferenceLabel.objects.exists()


@pytest.mark.django_db
def test_it_shows_a_closed_project_message_instead_of_an_item(client, people):
    people.project.is_closed = True
    people.project.save()
    client.force_login(people.users["carol"])
    page = client.get(f"/projects/{people.project.pk}/annotate/").content.decode()
    assert "is closed: it takes no new labels" in page and 'id="label-form"' not in page


@pytest.mark.django_db
def test_it_computes_agreement_matching_hand_computed_values(client, people):
    dataset = _dataset(client, people, [{"prompt": f"q{i}", "responses": ["x", "y"]} for i in range(4)])
    comparisons_build(project=people.project, dataset=dataset, overlap=2)
    comps = list(Comparison.objects.order_by("id"))
    votes = {"carol": "aabb", "bob": "abbb"}
    for name, choices in votes.items():
        for c, choice in zip(comps, choices):
            PreferenceLabel.objects.create(comparison=c, annotator=people.users[name], choice=choice, strength=1,
                                           display_order=c.response_ids)
    for c, choice in zip(comps, "aaab"):
        lm_label_create(comparison=c, choice=choice, model_version="judge-v1", provenance={"raw": choice})
    r = client.get(f"/api/v1/projects/{people.project.pk}/agreement",
                   headers={"Authorization": f"Bearer {token_for(people.users['dave'])}"})
    body = r.json()
    hh, hl, ll = (body["by_pair_kind"][k] for k in ("human-human", "human-lm", "lm-lm"))
    # carol AABB vs bob ABBB: p_o = 3/4, p_e = 1/2 -> kappa 1/2; alpha (nominal) = 1 - (2/8) / (30/56) = 8/15
    assert hh["percent_agreement"] == pytest.approx(0.75)
    assert hh["cohen_kappa"] == pytest.approx(0.5)
    assert hh["krippendorff_alpha"] == pytest.approx(8 / 15)
    # carol vs lm AAAB: 3/4, kappa 1/2; bob vs lm: 2/4, kappa (0.5 - 0.375) / 0.625 = 0.2
    assert hl["percent_agreement"] == pytest.approx(5 / 8)
    assert hl["cohen_kappa"] == pytest.approx((0.5 + 0.2) / 2)
    assert ll["n_pairs"] == 0 and ll["percent_agreement"] is None
    assert body["overall"]["percent_agreement"] == pytest.approx(8 / 12)
    carol = next(a for a in body["per_annotator"] if a["rater_id"] == "carol")
    assert carol["stats"]["percent_agreement"] == pytest.approx(6 / 8) and carol["n_labels"] == 4
    client.force_login(people.users["dave"])
    page = client.get(f"/projects/{people.project.pk}/agreement/").content.decode()
    assert '<tr data-kind="human-human"><td>human-human</td><td>0.750</td><td>0.500</td><td>0.533</td>' in page
    assert 'data-rater="lm:judge-v1"' in page
    client.force_login(people.users["carol"])
    assert client.get(f"/projects/{people.project.pk}/agreement/").status_code == 403


@pytest.mark.django_db
def test_it_shows_import_errors_and_progress_on_the_dataset_page(client, people):
    client.force_login(people.users["bob"])
    r = client.post(f"/projects/{people.project.pk}/datasets/",
                    {"file": SimpleUploadedFile("x.jsonl", b'{"prompt": "a"}\n{"prompt": 3}\n'), "mode": "strict"})
    assert r.status_code == 302
    page = client.get(r["Location"]).content.decode()
    assert "failed" in page and "line 2" in page and "must be text or a list of chat messages" in page
    client.force_login(people.users["carol"])
    assert client.post(f"/projects/{people.project.pk}/datasets/",
                       {"file": SimpleUploadedFile("y.jsonl", b'{"prompt": "a"}\n')}).status_code == 403


@pytest.mark.django_db
def test_it_polls_the_import_status_fragment_while_importing(client, people):
    dataset = Dataset.objects.create(project=people.project, name="big", source_format="jsonl", status="importing",
                                     created_by=people.users["alice"], bytes_total=1000, bytes_read=250, row_count=40)
    client.force_login(people.users["dave"])
    page = client.get(f"/projects/{people.project.pk}/datasets/{dataset.pk}/").content.decode()
    assert 'hx-trigger="every 1s"' in page and "25% read, 40 rows written so far." in page
    fragment = client.get(f"/projects/{people.project.pk}/datasets/{dataset.pk}/?part=status",
                          headers={"HX-Request": "true"}).content.decode()
    assert fragment.startswith('\n<div id="dataset-status"') or fragment.lstrip().startswith('<div id="dataset-status"')
    assert "<html" not in fragment


@pytest.mark.django_db
def test_it_builds_comparisons_and_changes_overlap_from_the_pages(client, people):
    dataset = _dataset(client, people, [{"prompt": "p", "responses": ["a", "b", "c"]}])
    client.force_login(people.users["bob"])
    r = client.post(f"/projects/{people.project.pk}/datasets/{dataset.pk}/comparisons/",
                    {"strategy": "all_pairs", "overlap": "2", "pairs_per_prompt": "1", "ranking_size": "0", "seed": "0"})
    assert r.status_code == 302 and Comparison.objects.filter(overlap=2).count() == 3
    bad = client.post(f"/projects/{people.project.pk}/datasets/{dataset.pk}/comparisons/",
                      {"strategy": "ranking", "overlap": "0"})
    assert bad.status_code == 422 and "Ensure this value is greater than or equal to 1" in bad.content.decode()
    client.post(f"/projects/{people.project.pk}/comparisons/", {"overlap": "4"})
    assert set(Comparison.objects.values_list("overlap", flat=True)) == {4}
    page = client.get(f"/projects/{people.project.pk}/comparisons/").content.decode()
    assert "Overlap set to 4 on 3 comparisons." in page
    client.force_login(people.users["dave"])
    assert client.post(f"/projects/{people.project.pk}/comparisons/", {"overlap": "1"}).status_code == 403


@pytest.mark.django_db
def test_it_downloads_an_export_from_the_page(client, people):
    dataset = _dataset(client, people, [{"prompt": "p", "responses": ["a", "b"]}])
    comparisons_build(project=people.project, dataset=dataset)
    comparison = Comparison.objects.get()
    lm_label_create(comparison=comparison, choice="a", model_version="judge", provenance={})
    client.force_login(people.users["dave"])
    assert "tie_policy" in client.get(f"/projects/{people.project.pk}/export/").content.decode()
    r = client.get(f"/projects/{people.project.pk}/export/", {"format": "jsonl", "tie_policy": "drop"})
    row = json.loads(b"".join(r.streaming_content))
    assert (row["chosen"], row["rejected"], row["source"]) == ("a", "b", "lm")
    bad = client.get(f"/projects/{people.project.pk}/export/", {"format": "xml"})
    assert bad.status_code == 422 and "Unknown format" in bad.content.decode()
