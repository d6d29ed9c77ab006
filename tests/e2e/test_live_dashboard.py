"""Live job dashboards: SSE from the async view under uvicorn, Redis fan-out, replay with
Last-Event-ID, and a chart point arriving in Chromium."""

import json

import httpx
import pytest
from django.conf import settings
from django.test import Client

from tests.conftest import wait_for
from webapp.jobs.models import Job, JobState, MetricPoint
from webapp.jobs.services import job_create

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.worker]


def _session_cookie(user) -> dict:
    client = Client()
    client.force_login(user)
    return {settings.SESSION_COOKIE_NAME: client.cookies[settings.SESSION_COOKIE_NAME].value}


def _read_events(response, until: str, limit: int = 500) -> list[tuple[str | None, str, object]]:
    events, event_id, name, data = [], None, None, None
    for line in response.iter_lines():
        if line.startswith("id: "):
            event_id = line[4:]
        elif line.startswith("event: "):
            name = line[7:]
        elif line.startswith("data: "):
            data = json.loads(line[6:])
        elif line == "" and name:
            events.append((event_id, name, data))
            if name == until or len(events) >= limit:
                return events
            event_id, name, data = None, None, None
    return events


def _selfcheck(people, steps, interval, queue="default"):
    return job_create(project=people.project, user=people.users["alice"], kind="selfcheck", queue=queue,
                      argv=["selfcheck", "--steps", str(steps), "--interval", str(interval)])


def test_it_streams_metrics_live_and_ends_when_the_job_finishes(celery_workers, app_server, people):
    job = _selfcheck(people, steps=6, interval=0.3)
    url = f"{app_server}/projects/{people.project.pk}/jobs/{job.pk}/events/"
    with httpx.stream("GET", url, cookies=_session_cookie(people.users["dave"]), timeout=60) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        events = _read_events(response, until="done")
    metrics = [point for _, name, data in events if name == "metrics" for point in data]
    assert [(p["step"], p["value"]) for p in metrics if p["name"] == "loss"] == [
        (step, pytest.approx(1 / step)) for step in range(1, 7)]
    assert events[-1][1:] == ("done", {"state": "succeeded"})
    ids = [int(event_id) for event_id, name, _ in events if name == "metrics"]
    assert ids == sorted(ids) and len(set(ids)) == len(ids)


def test_it_replays_only_what_came_after_last_event_id(celery_workers, app_server, people):
    job = _selfcheck(people, steps=4, interval=0)
    wait_for(lambda: Job.objects.get(pk=job.pk).state == JobState.SUCCEEDED, 60, message="job to finish")
    points = list(MetricPoint.objects.filter(job=job).order_by("pk"))
    resume_after = points[3].pk
    url = f"{app_server}/projects/{people.project.pk}/jobs/{job.pk}/events/"
    headers = {"Last-Event-ID": str(resume_after)}
    with httpx.stream("GET", url, cookies=_session_cookie(people.users["bob"]), headers=headers, timeout=30) as response:
        events = _read_events(response, until="done")
    replayed = [(p["step"], p["name"]) for _, name, data in events if name == "metrics" for p in data]
    assert replayed == [(p.step, p.name) for p in points[4:]]


def test_it_refuses_the_stream_to_outsiders_and_annotators(app_server, people):
    job = Job.objects.create(project=people.project, kind="selfcheck", created_by=people.users["alice"])
    url = f"{app_server}/projects/{people.project.pk}/jobs/{job.pk}/events/"
    assert httpx.get(url, cookies=_session_cookie(people.users["eve"]), timeout=10).status_code == 404
    assert httpx.get(url, cookies=_session_cookie(people.users["carol"]), timeout=10).status_code == 403
    anonymous = httpx.get(url, timeout=10)
    assert anonymous.status_code == 302 and "/accounts/login/" in anonymous.headers["location"]


@pytest.mark.browser
def test_it_shows_a_chart_point_arriving_over_sse(celery_workers, app_server, browser, people):
    job = _selfcheck(people, steps=400, interval=0.25)
    wait_for(lambda: Job.objects.get(pk=job.pk).state == JobState.RUNNING, 60, message="job to start")
    context = browser.new_context()
    context.add_cookies([{"name": settings.SESSION_COOKIE_NAME, "url": app_server,
                          "value": _session_cookie(people.users["dave"])[settings.SESSION_COOKIE_NAME]}])
    page = context.new_page()
    page.goto(f"{app_server}/projects/{people.project.pk}/jobs/{job.pk}/")
    page.wait_for_selector(".chart[data-metric='loss'] canvas", timeout=30_000)
    first = int(page.get_attribute("#job-dashboard", "data-points-seen") or 0)
    # Points keep arriving with no reload: the count grows while the job runs.
    # Polled from here: wait_for_function evaluates its predicate with eval, which the page's CSP refuses.
    wait_for(lambda: int(page.get_attribute("#job-dashboard", "data-points-seen") or 0) > first + 4, 30, 0.2,
             "more points to arrive")
    assert "at step" in page.locator(".chart[data-metric='loss'] .last").inner_text()
    Job.objects.filter(pk=job.pk).update(cancel_requested=True)
    page.wait_for_selector("#job-state:has-text('cancelled')", timeout=30_000)


@pytest.mark.browser
@pytest.mark.parametrize("locale", ["en-US", "sv-SE"])
def test_it_keeps_the_minus_sign_of_negative_ticks_in_any_browser_locale(app_server, browser, people, locale):
    # uPlot's own tick formatter is Intl.NumberFormat(navigator.language): in sv-SE (fi, nb, ...) it
    # writes U+2212 and a decimal comma, which a canvas font without that glyph draws as nothing.
    job = Job.objects.create(project=people.project, kind="selfcheck", created_by=people.users["alice"],
                             state=JobState.SUCCEEDED, title="negative rewards")
    values = [-0.62, -0.45, -0.3, -0.1, 0.15]  # ticks at tenths: a decimal separator shows too
    MetricPoint.objects.bulk_create(MetricPoint(job=job, step=step, name="reward", value=value)
                                    for step, value in enumerate(values, start=1))
    context = browser.new_context(locale=locale)
    context.add_cookies([{"name": settings.SESSION_COOKIE_NAME, "url": app_server,
                          "value": _session_cookie(people.users["dave"])[settings.SESSION_COOKIE_NAME]}])
    page = context.new_page()
    page.goto(f"{app_server}/projects/{people.project.pk}/jobs/{job.pk}/")
    assert page.evaluate("navigator.language") == locale
    page.wait_for_selector(".chart[data-metric='reward'] canvas", timeout=30_000)
    # The y axis's tick labels as drawn on the canvas (uPlot keeps the strings it drew in _values).
    ticks = page.evaluate("""() => {
        const host = document.querySelector(".chart[data-metric='reward'] .plot");
        const plot = Object.values(window.jobDashboard.charts).find((c) => c.el.contains(host)).plot;
        return plot.axes[1]._values; }""")
    context.close()
    assert ticks, "the y axis drew no ticks"
    negative = [t for t in ticks if t.startswith("-")]
    assert negative, f"no tick reads as negative with ASCII '-': {ticks}"
    assert all(ch in "-0123456789." for t in ticks for ch in t), ticks
    assert any("." in t for t in ticks), ticks
    numbers = [float(t) for t in ticks]
    # Signs intact: the ticks run in order from below the lowest value's tenth to 0 and past it.
    assert numbers == sorted(numbers) and min(numbers) <= -0.5 and max(numbers) >= 0, ticks
    assert all(min(values) - 0.25 <= n <= max(values) + 0.25 for n in numbers), ticks
