"""The samples browser in Chromium under the page's Content-Security-Policy: htmx filters and sorts the
table, and a live refresh (new samples over SSE) keeps the filters (issue 15)."""

import pytest
from django.conf import settings
from django.test import Client

from tests.conftest import wait_for
from tests.webapp.test_job_samples import _samples
from webapp.jobs.models import Job
from webapp.jobs.services import job_record_events
from webapp.jobs.kinds import GRPO_KIND

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.browser]


def _counts(page) -> str:
    return page.locator("#sample-counts").inner_text()


def test_it_filters_sorts_and_keeps_the_filters_when_samples_arrive(app_server, browser, people):
    # A queued job's row that is never sent to a worker: a session's workers (started by an earlier test) would
    # run its empty command and fail it at once, and the page's stream would end before the samples arrive.
    job = Job.objects.create(project=people.project, created_by=people.users["bob"], kind=GRPO_KIND, title="GRPO: t")
    job_record_events(job_id=job.pk, events=_samples())
    client = Client()
    client.force_login(people.users["dave"])
    context = browser.new_context()
    context.add_cookies([{"name": settings.SESSION_COOKIE_NAME, "url": app_server,
                          "value": client.cookies[settings.SESSION_COOKIE_NAME].value}])
    page = context.new_page()
    refused = []
    page.on("console", lambda message: refused.append(message.text) if "Content Security Policy" in message.text
            else None)
    page.goto(f"{app_server}/projects/{people.project.pk}/jobs/{job.pk}/")
    assert "36 of 36 logged samples match" in _counts(page)
    # htmx (a deferred script) must have bound the filter form before the first change, or that change is lost
    page.wait_for_load_state("networkidle")

    page.select_option("#sample-filters select[name=sort]", "-component:agrees")
    best = max(e["rewards"]["agrees"] for e in _samples() if e["rewards"]["agrees"] is not None)
    wait_for(lambda: f"agrees {best:.3f}" in page.locator("#sample-table tbody tr").first.inner_text(), 15, 0.2,
             "the table sorted by the component")
    assert "1 have no value to sort by" in _counts(page)

    page.fill("#sample-prompt", "colour")
    wait_for(lambda: "12 of 36 logged samples match" in _counts(page), 15, 0.2, "the prompt filter")

    # three more samples arrive; the SSE 'samples' event refreshes the table with the same filters
    job_record_events(job_id=job.pk, events=[{**e, "step": 13} for e in _samples(1)])
    wait_for(lambda: "13 of 39 logged samples match" in _counts(page), 20, 0.2, "the live refresh")
    assert page.input_value("#sample-prompt") == "colour"
    assert page.input_value("#sample-filters select[name=sort]") == "-component:agrees"
    assert not refused, refused
