"""What the scale benchmark (bench/scale.py) changed, held as behaviour: the export reads labels a range
of comparisons at a time in the same order with the same content, and a download under uvicorn streams
instead of sitting whole in the web worker's memory."""

from __future__ import annotations

import json
import os
import sys
import urllib.request
from pathlib import Path

import pytest

from tests.conftest import Processes, free_port, token_for, wait_for
from webapp.annotation.models import Comparison, PreferenceLabel
from webapp.annotation.selectors import export_labels
from webapp.datasets.models import Dataset, Prompt, Response


def _project_with_labels(people, n_prompts: int, text_size: int = 40, dataset_name: str = "d") -> Dataset:
    """n_prompts pairs; comparison i gets i % 4 labels (none, a human, a human and an LM, ...)."""
    owner = people.users["alice"]
    dataset = Dataset.objects.create(project=people.project, name=dataset_name, source_format="jsonl",
                                     status="ready", created_by=owner)
    prompts = Prompt.objects.bulk_create([Prompt(dataset=dataset, source_line=i + 1, text=f"{dataset_name} {i}?")
                                          for i in range(n_prompts)])
    responses = Response.objects.bulk_create([Response(prompt=p, text=(f"{k} {p.text} " * text_size)[:text_size * 8])
                                              for p in prompts for k in ("first", "second")])
    comparisons = Comparison.objects.bulk_create([
        Comparison(project=people.project, prompt=p, response_ids=[responses[2 * i].pk, responses[2 * i + 1].pk],
                   overlap=3) for i, p in enumerate(prompts)])
    raters = [people.users["carol"], people.users["bob"]]
    labels = []
    for i, c in enumerate(comparisons):
        for j in range(i % 4):
            if j < 2:
                labels.append(PreferenceLabel(comparison=c, source="human", annotator=raters[j], choice="ab"[(i + j) % 2],
                                              strength=1 + j % 2, display_order=c.response_ids[::-1],
                                              rationale=f"r{i}-{j}"))
            else:
                labels.append(PreferenceLabel(comparison=c, source="lm", choice="tie", strength=0, model_version="judge",
                                              display_order=c.response_ids, provenance={"confidence": 0.5}))
    PreferenceLabel.objects.bulk_create(labels)
    return dataset


@pytest.mark.django_db
@pytest.mark.parametrize("chunk_size", [1, 2, 3, 7, 1000])
def test_it_exports_every_label_once_in_comparison_order_whatever_the_chunk(people, chunk_size):
    first = _project_with_labels(people, 23)
    second = _project_with_labels(people, 9, dataset_name="e")
    elsewhere = Comparison.objects.create(project=people.other_project, prompt=first.prompts.first(),
                                          response_ids=Comparison.objects.first().response_ids)
    PreferenceLabel.objects.create(comparison=elsewhere, source="lm", choice="a", model_version="other")

    expected = list(PreferenceLabel.objects.filter(comparison__project=people.project)
                    .order_by("comparison_id", "id").values_list("id", "comparison_id", "source", "choice", "rationale"))
    assert len(expected) == sum(i % 4 for i in range(23)) + sum(i % 4 for i in range(9))
    got = [(int(x.label_id), int(x.comparison_id), x.source, x.choice, x.rationale)
           for x in export_labels(project=people.project, chunk_size=chunk_size)]
    assert got == expected

    lm_only = [int(x.label_id) for x in export_labels(project=people.project, source="lm", chunk_size=chunk_size)]
    assert lm_only == [i for i, _, source, _, _ in expected if source == "lm"]
    in_second = [int(x.comparison_id) for x in export_labels(project=people.project, dataset_id=second.pk,
                                                             chunk_size=chunk_size)]
    assert in_second == [c for _, c, _, _, _ in expected if Comparison.objects.get(pk=c).prompt.dataset_id == second.pk]
    assert len(in_second) == sum(i % 4 for i in range(9))

    # the content of one exported label, position-relative as before
    label = PreferenceLabel.objects.filter(comparison__project=people.project, source="human").order_by("id").first()
    row = next(x for x in export_labels(project=people.project, chunk_size=chunk_size) if x.label_id == str(label.pk))
    assert row.annotator == label.annotator.username and row.display_order == [1, 0]
    assert [r.text for r in row.responses] == [Response.objects.get(pk=r).text for r in label.comparison.response_ids]
    assert row.prompt_text == label.comparison.prompt.text


def _status_kb(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise AssertionError(f"{field} not in /proc/{pid}/status")


@pytest.mark.django_db(transaction=True)
def test_an_export_download_under_uvicorn_streams_instead_of_holding_the_file(service_env, process_logs, people):
    """Django serves a sync iterator under ASGI by reading it into a list first: the whole file sat in the
    worker (a 64 MB export grew it by 59 MB)."""
    # 12,000 rows of 4 KB: one read chunk (1,000 labels) is a small part of the file
    _project_with_labels(people, 8000, text_size=250)
    port = free_port()
    procs = Processes()
    server = procs.start("uvicorn-export", [sys.executable, "-m", "uvicorn", "webapp.asgi:application", "--host",
                                            "127.0.0.1", "--port", str(port), "--no-access-log"], service_env,
                         process_logs)
    base = f"http://127.0.0.1:{port}"
    headers = {"Authorization": f"Bearer {token_for(people.users['dave'])}"}

    def fetch(path: str) -> tuple[int, int, dict]:
        request = urllib.request.Request(base + path, headers=headers)
        with urllib.request.urlopen(request, timeout=120) as response:
            size = 0
            while chunk := response.read(1 << 16):
                size += len(chunk)
            return response.status, size, dict(response.headers)

    def up():
        try:
            return urllib.request.urlopen(base + "/healthz", timeout=1).status == 200
        except OSError:
            return False

    try:
        wait_for(up, 60, 0.2, "uvicorn to serve /healthz")
        url = f"/api/v1/projects/{people.project.pk}/export?format=jsonl&tie_policy=keep"
        fetch(url + "&dataset_id=999999999")  # warm (imports, first allocations) with an empty export
        before = _status_kb(server.pid, "VmRSS")
        Path(f"/proc/{server.pid}/clear_refs").write_text("5")  # VmHWM := VmRSS
        status, size, response_headers = fetch(url)
        growth_mb = (_status_kb(server.pid, "VmHWM") - before) / 1024
    finally:
        procs.stop_all()
    response_headers = {k.lower(): v for k, v in response_headers.items()}
    assert status == 200 and int(response_headers["content-length"]) == size
    assert response_headers["content-disposition"].startswith("attachment")
    assert int(response_headers["x-rows-out"]) == 12000
    assert size > 40 * (1 << 20), size
    assert growth_mb < size / (1 << 20) / 3, f"the worker grew by {growth_mb:.1f} MB serving {size / 2**20:.1f} MB"


@pytest.mark.django_db
def test_it_reports_agreement_from_labels_read_a_chunk_at_a_time_as_counted_by_hand(people):
    """c1: carol A, bob A, LM A; c2: carol A, bob B, an imported rater 'zed' B; c3: carol tie, LM tie;
    and one N-way ranking. Pairs: 7 (5 agree); human-human 4 (2 agree); human-LM 3 (3 agree).
    Nominal alpha by hand: coincidences AA 3, AB = BA 1, BB 1, tie-tie 2 (n = 8; n_A 4, n_B 2, n_tie 2);
    D_o = 2/8, D_e = 2(4·2 + 4·2 + 2·2)/(8·7) = 40/56, alpha = 1 - 0.25·56/40 = 0.65."""
    from webapp.annotation.selectors import agreement_for

    dataset = _project_with_labels(people, 0)
    carol, bob = people.users["carol"], people.users["bob"]
    comparisons = []
    for i in range(4):
        prompt = Prompt.objects.create(dataset=dataset, source_line=i + 1, text=f"q{i}")
        ids = [Response.objects.create(prompt=prompt, text=f"r{i}{k}").pk for k in range(3 if i == 3 else 2)]
        comparisons.append(Comparison.objects.create(project=people.project, prompt=prompt, response_ids=ids,
                                                     kind="ranking" if i == 3 else "pair"))
    c1, c2, c3, ranked = comparisons
    human = dict(source="human", strength=1)
    PreferenceLabel.objects.bulk_create([
        PreferenceLabel(comparison=c1, annotator=carol, choice="a", **human),
        PreferenceLabel(comparison=c1, annotator=bob, choice="a", **human),
        PreferenceLabel(comparison=c1, source="lm", choice="a", model_version="judge"),
        PreferenceLabel(comparison=c2, annotator=carol, choice="a", **human),
        PreferenceLabel(comparison=c2, annotator=bob, choice="b", **human),
        PreferenceLabel(comparison=c2, choice="b", provenance={"imported": {"annotator": "zed"}}, **human),
        PreferenceLabel(comparison=c3, annotator=carol, choice="tie", source="human", strength=0),
        PreferenceLabel(comparison=c3, source="lm", choice="tie", strength=0, model_version="judge"),
        PreferenceLabel(comparison=ranked, annotator=carol, choice="ranking", ranking=ranked.response_ids[::-1],
                        **human),
    ])
    result = agreement_for(project=people.project)
    report = result["report"]
    assert result["n_labels"] == 8 and result["n_rankings"] == 1
    assert (report.overall.n_pairs, report.overall.percent_agreement) == (7, pytest.approx(5 / 7))
    assert report.overall.krippendorff_alpha == pytest.approx(0.65)
    hh, hl = report.by_pair_kind["human-human"], report.by_pair_kind["human-lm"]
    assert (hh.n_pairs, hh.percent_agreement, hl.n_pairs, hl.percent_agreement) == (4, 0.5, 3, 1.0)
    assert {a.rater_id: a.n_labels for a in report.per_annotator} == {"carol": 3, "bob": 2, "imported:zed": 1,
                                                                      "lm:judge": 2}


@pytest.mark.django_db
def test_agreement_streams_comparisons_whatever_order_their_labels_were_written_in(people):
    """Labels written interleaved (c2, c1, c2, c1) and two rankings of one comparison still pair up by
    comparison in the one ordered pass. By hand: pairwise c1 carol B / bob B, c2 carol A / bob A: 2 pairs,
    both agree. Rankings of [r0, r1, r2]: carol r2 > r1 > r0, bob r2 > r0 > r1: units r0-r1 (B vs A),
    r0-r2 (B, B), r1-r2 (B, B): 3 pairs, 2 agree."""
    from webapp.annotation.selectors import agreement_for

    dataset = _project_with_labels(people, 0)
    carol, bob = people.users["carol"], people.users["bob"]
    comparisons = []
    for i in range(3):
        prompt = Prompt.objects.create(dataset=dataset, source_line=i + 1, text=f"q{i}")
        ids = [Response.objects.create(prompt=prompt, text=f"r{i}{k}").pk for k in range(3 if i == 2 else 2)]
        comparisons.append(Comparison.objects.create(project=people.project, prompt=prompt, response_ids=ids,
                                                     kind="ranking" if i == 2 else "pair"))
    c1, c2, ranked = comparisons
    r0, r1, r2 = ranked.response_ids
    human = dict(source="human", strength=1)
    for comparison, who, choice in [(c2, carol, "a"), (ranked, carol, None), (c1, carol, "b"), (c2, bob, "a"),
                                    (ranked, bob, None), (c1, bob, "b")]:
        ranking = None if choice else ([r2, r1, r0] if who == carol else [r2, r0, r1])
        PreferenceLabel.objects.create(comparison=comparison, annotator=who, choice=choice or "ranking",
                                       ranking=ranking, **human)
    result = agreement_for(project=people.project)
    overall, rankings = result["report"].overall, result["rankings"].overall
    assert (overall.n_comparisons, overall.n_pairs, overall.percent_agreement) == (2, 2, 1.0)
    assert (rankings.n_comparisons, rankings.n_pairs, rankings.percent_agreement) == (3, 3, pytest.approx(2 / 3))
    assert (result["n_labels"], result["n_rankings"]) == (4, 2)
