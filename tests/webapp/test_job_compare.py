"""The compare page: which runs it shows, their colours, and the table of what differs in their specs."""

import pytest
from django.test import Client

from webapp.jobs.models import Job
from webapp.jobs.selectors import (COMPARE_MAX_RUNS, RUN_PALETTE, history_columns, run_colour, run_colours,
                                   spec_differences)

pytestmark = pytest.mark.django_db


def _job(people, spec, kind="train_grpo", title="run"):
    return Job.objects.create(project=people.project, kind=kind, created_by=people.users["alice"], spec=spec, title=title)


def _client(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


def test_it_lists_only_the_fields_that_differ_with_a_dash_where_a_spec_lacks_one(people):
    base = {"model": "m", "learning_rate": 1e-6, "output_dir": "/runs/1", "prompt_snapshot": "/s/1.jsonl",
            "reward_spec": {"components": [{"name": "format", "weight": 1.0}, {"name": "len", "weight": 0.1}],
                            "normalization": "group"}}
    other = {**base, "learning_rate": 3e-6, "output_dir": "/runs/2", "prompt_snapshot": "/s/2.jsonl", "beta": 0.04,
             "reward_spec": {"components": [{"name": "format", "weight": 1.0}, {"name": "len", "weight": 0.2}],
                             "normalization": "group"}}
    rows = spec_differences(jobs=[_job(people, base), _job(people, other, kind="train_reward_model")])
    assert rows == [
        {"field": "beta", "values": ["—", "0.04"]},
        {"field": "kind", "values": ["train_grpo", "train_reward_model"]},
        {"field": "learning_rate", "values": ["1e-06", "3e-06"]},
        {"field": "reward_spec.components[1].weight", "values": ["0.1", "0.2"]},
    ]


def test_it_tells_a_number_from_the_same_text_and_true_from_one(people):
    rows = spec_differences(jobs=[_job(people, {"a": 1, "b": "x", "c": True}), _job(people, {"a": "1", "b": "x", "c": 1})])
    assert [row["field"] for row in rows] == ["a", "c"]


def test_it_gives_each_run_a_fixed_colour_and_runs_on_one_page_different_ones():
    assert run_colour(7) == run_colour(7) and run_colour(7) in RUN_PALETTE
    ids = list(range(1, COMPARE_MAX_RUNS + 1))
    colours = run_colours(ids)
    assert len(set(colours.values())) == len(ids)
    assert run_colours([3, 9])[3] == run_colour(3)  # the lower id keeps its own colour


def test_it_compares_at_most_ten_runs_and_says_so(people):
    jobs = [_job(people, {"seed": i}, title=f"seed {i}") for i in range(COMPARE_MAX_RUNS + 2)]
    ids = ",".join(str(job.pk) for job in jobs)
    response = _client(people.users["dave"]).get(f"/projects/{people.project.pk}/jobs/compare/?ids={ids}")
    assert response.status_code == 200
    assert [entry["id"] for entry in response.context["dashboard_jobs"]] == [job.pk for job in jobs[:COMPARE_MAX_RUNS]]
    assert f"first {COMPARE_MAX_RUNS} of the {COMPARE_MAX_RUNS + 2} runs" in response.content.decode()
    assert 'id="compare-add"' not in response.content.decode()


def test_it_adds_a_run_from_the_page_and_ignores_other_projects_jobs(people):
    first, second, third = (_job(people, {"seed": i}) for i in range(3))
    outsider = Job.objects.create(project=people.other_project, kind="train_grpo", created_by=people.users["eve"])
    client = _client(people.users["dave"])
    response = client.get(f"/projects/{people.project.pk}/jobs/compare/",
                          {"ids": f"{first.pk},{second.pk}", "add": ["", str(third.pk), str(outsider.pk)]})
    assert [entry["id"] for entry in response.context["dashboard_jobs"]] == [first.pk, second.pk, third.pk]
    page = response.content.decode()
    assert 'id="compare-add"' in page and f'<option value="{outsider.pk}">' not in page
    assert [row["field"] for row in response.context["differences"]] == ["seed"]


def test_it_sends_back_to_the_jobs_page_with_fewer_than_two_runs(people):
    job = _job(people, {})
    response = _client(people.users["dave"]).get(f"/projects/{people.project.pk}/jobs/compare/?ids={job.pk}")
    assert response.status_code == 302 and response["Location"].endswith(f"/projects/{people.project.pk}/jobs/")


# The history is read on the shared thread pool (its own database connection): the rows must be committed.
@pytest.mark.django_db(transaction=True)
def test_it_serves_a_jobs_metric_history_in_columns_to_members_only(people):
    from webapp.jobs.models import MetricPoint

    job = _job(people, {})
    MetricPoint.objects.bulk_create([MetricPoint(job=job, step=1, name="reward", value=0.5),
                                     MetricPoint(job=job, step=1, name="kl", value=None),
                                     MetricPoint(job=job, step=2, name="reward", value=-0.25)])
    last = MetricPoint.objects.filter(job=job).order_by("-pk").first()
    url = f"/projects/{people.project.pk}/jobs/{job.pk}/metrics/"
    body = _client(people.users["dave"]).get(url).json()
    assert body["last_id"] == last.pk
    assert history_columns(body["series"]["reward"]) == ([1, 2], [0.5, -0.25])
    assert history_columns(body["series"]["kl"]) == ([1], [None])
    # One time per step (its first point's), not one per metric.
    assert body["times"][0] == [1, 2]
    assert body["times"][1][1] == pytest.approx(last.created_at.timestamp(), abs=5)
    assert _client(people.users["eve"]).get(url).status_code == 404
    assert Client().get(url).status_code == 302  # signed out: to the sign-in page


# The history is read on the shared thread pool (its own database connection): the rows must be committed.
@pytest.mark.django_db(transaction=True)
def test_it_sends_a_history_in_step_order_with_a_rewritten_step_last(people):
    from webapp.jobs.models import MetricPoint

    job = _job(people, {})
    for step, value in [(2, 0.2), (1, 0.1), (3, 0.3), (2, 0.25)]:  # step 2 written again (a resumed run)
        MetricPoint.objects.create(job=job, step=step, name="reward", value=value)
    body = _client(people.users["dave"]).get(f"/projects/{people.project.pk}/jobs/{job.pk}/metrics/").json()
    assert history_columns(body["series"]["reward"]) == ([1, 2, 2, 3], [0.1, 0.2, 0.25, 0.3])
    # Every bit of a float64 survives (17 significant digits; JSON text of fewer digits would round it).
    MetricPoint.objects.create(job=job, step=4, name="kl", value=0.1 + 0.2)
    MetricPoint.objects.create(job=job, step=5, name="kl", value=-1.2345678901234567e-300)
    body = _client(people.users["dave"]).get(f"/projects/{people.project.pk}/jobs/{job.pk}/metrics/").json()
    assert history_columns(body["series"]["kl"]) == ([4, 5], [0.30000000000000004, -1.2345678901234567e-300])
    assert body["last_id"] == MetricPoint.objects.filter(job=job).order_by("-pk").first().pk


def _metrics(job_id, points):
    from webapp.jobs.services import job_record_events

    job_record_events(job_id=job_id, events=[{"kind": "metric", "step": step, "name": name, "value": value}
                                             for step, name, value in points])


def _history_queries(job) -> list[str]:
    """The SQL metric_history_json runs for ``job`` (in this thread) that reads metric points."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from webapp.jobs.models import MetricPoint
    from webapp.jobs.selectors import metric_history_json

    with CaptureQueriesContext(connection) as queries:
        metric_history_json(job=job)
    return [q["sql"] for q in queries.captured_queries if MetricPoint._meta.db_table in q["sql"]]


# Rows committed: the history is read on the shared thread pool, and the file is written after the commit.
@pytest.mark.django_db(transaction=True)
def test_it_serves_a_finished_jobs_history_from_the_file_written_as_it_ended_and_a_resumed_run_its_own(people, tmp_path):
    from webapp.jobs.models import JobState, MetricPoint
    from webapp.jobs.selectors import metric_history_path, metric_history_text
    from webapp.jobs.services import job_claim, job_finish
    from webapp.training.services import job_resume

    first = Job.objects.create(project=people.project, kind="train_grpo", created_by=people.users["alice"],
                               state=JobState.RUNNING, output_dir=str(tmp_path), argv=["train", "grpo", "spec.json"])
    (tmp_path / "checkpoints" / "checkpoint-2").mkdir(parents=True)
    _metrics(first.pk, [(1, "reward", 0.5), (1, "kl", float("nan")), (2, "reward", 0.75)])
    client = _client(people.users["dave"])
    url = f"/projects/{people.project.pk}/jobs/{first.pk}/metrics/"
    assert history_columns(client.get(url).json()["series"]["reward"]) == ([1, 2], [0.5, 0.75])
    assert _history_queries(first), "a running job is read from its rows"
    assert not list(tmp_path.glob("**/metric-history.*"))

    assert job_finish(job_id=first.pk, state=JobState.FAILED, error="killed")
    first.refresh_from_db()
    kept = metric_history_path(first)
    assert kept.is_file()
    assert kept.read_text() == metric_history_text(job=first)  # what the rows say
    assert _history_queries(first) == []  # served without reading a metric point
    body = client.get(url).json()
    assert history_columns(body["series"]["reward"]) == ([1, 2], [0.5, 0.75])
    assert history_columns(body["series"]["kl"]) == ([1], [None])
    assert body["last_id"] == MetricPoint.objects.filter(job=first).order_by("-pk").first().pk
    # Written behind the file's back: the history is the file's (the page gets this one from the SSE replay).
    MetricPoint.objects.create(job=first, step=3, name="reward", value=9.0)
    assert history_columns(client.get(url).json()["series"]["reward"]) == ([1, 2], [0.5, 0.75])
    MetricPoint.objects.filter(job=first, step=3).delete()
    kept_text = kept.read_text()

    # A resume is a new row in the same output folder: its history is its own, from the rows while it runs,
    # and a file of its own once it ends; the first run's file stays what the first run's rows say.
    second = job_resume(job=first, user=people.users["bob"])
    assert second.parent_id == first.pk and second.output_dir == first.output_dir
    assert job_claim(job_id=second.pk, worker="test")
    second.refresh_from_db()
    _metrics(second.pk, [(3, "reward", 1.0)])
    second_url = f"/projects/{people.project.pk}/jobs/{second.pk}/metrics/"
    assert history_columns(client.get(second_url).json()["series"]["reward"]) == ([3], [1.0])
    _metrics(second.pk, [(4, "reward", 1.25)])
    assert history_columns(client.get(second_url).json()["series"]["reward"]) == ([3, 4], [1.0, 1.25])
    assert job_finish(job_id=second.pk, state=JobState.SUCCEEDED)
    second.refresh_from_db()
    assert metric_history_path(second) != kept and metric_history_path(second).read_text() == metric_history_text(job=second)
    assert _history_queries(second) == []
    assert history_columns(client.get(second_url).json()["series"]["reward"]) == ([3, 4], [1.0, 1.25])
    assert kept.read_text() == kept_text == metric_history_text(job=first)
    assert history_columns(client.get(url).json()["series"]["reward"]) == ([1, 2], [0.5, 0.75])


@pytest.mark.django_db(transaction=True)
def test_it_reads_a_job_afresh_when_its_row_changes_state_and_keeps_a_finished_one_without_a_file(people):
    from django.utils import timezone

    from webapp.jobs.models import JobState, MetricPoint
    from webapp.jobs.selectors import metric_history_path

    job = _job(people, {})
    job.state, job.finished_at = JobState.SUCCEEDED, timezone.now()  # finished before files were kept
    job.save()
    MetricPoint.objects.create(job=job, step=1, name="reward", value=0.5)
    url = f"/projects/{people.project.pk}/jobs/{job.pk}/metrics/"
    client = _client(people.users["dave"])
    assert history_columns(client.get(url).json()["series"]["reward"]) == ([1], [0.5])
    assert metric_history_path(job).is_file() and _history_queries(job) == []  # kept on that first read
    job.state, job.finished_at = JobState.RUNNING, None  # the row running again: read afresh, no file kept
    job.save()
    MetricPoint.objects.create(job=job, step=2, name="reward", value=0.75)
    assert history_columns(client.get(url).json()["series"]["reward"]) == ([1, 2], [0.5, 0.75])
    assert not list(metric_history_path(job).parent.glob("metric-history.*.running.*"))
    job.state, job.finished_at = JobState.SUCCEEDED, timezone.now()
    job.save()
    assert history_columns(client.get(url).json()["series"]["reward"]) == ([1, 2], [0.5, 0.75])
    assert [path.name for path in metric_history_path(job).parent.glob("metric-history.*")] == [metric_history_path(job).name]
