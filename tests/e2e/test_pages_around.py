"""The pages around the dashboards, as a newcomer walks them (issue 15): refusals inside the layout,
confirmations and layouts that fit, sensible defaults, and worker logs that stay readable.

Screenshots go to $PAGE_SHOTS when it is set (to look at a page by eye)."""

import os
import time

import pytest

from tests.conftest import sign_in, wait_for

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.browser]


def _shot(page, name: str) -> None:
    if os.environ.get("PAGE_SHOTS"):
        page.screenshot(path=os.path.join(os.environ["PAGE_SHOTS"], f"{name}.png"), full_page=True)


def _fits_horizontally(page) -> bool:
    return page.evaluate("() => document.documentElement.scrollWidth <= document.documentElement.clientWidth")


def test_it_refuses_a_viewer_inside_the_layout_and_hides_annotate(app_server, browser, people):
    page = browser.new_page()
    sign_in(page, app_server, "dave")
    page.goto(f"{app_server}/projects/{people.project.pk}/")
    assert page.locator("nav.subnav a:has-text('Agreement')").count() == 1
    assert page.locator("nav.subnav a:has-text('Annotate')").count() == 0
    response = page.goto(f"{app_server}/projects/{people.project.pk}/annotate/")
    assert response.status == 403
    _shot(page, "403")
    assert page.locator("header.top a.brand").is_visible()
    assert page.locator("nav.subnav a.project-name").inner_text() == "Helpfulness"
    assert "needs the owner, designer or annotator role" in page.locator("#refusal").inner_text()


def test_it_keeps_the_bookkeeping_tasks_out_of_the_worker_log(celery_workers, process_logs):
    from django.conf import settings

    log = process_logs / "worker-default.log"
    periodic = [entry["task"] for entry in settings.CELERY_BEAT_SCHEDULE.values()]
    # Beat sends each bookkeeping task every few seconds; wait for at least two rounds of the slowest.
    time.sleep(2 * max(float(entry["schedule"]) for entry in settings.CELERY_BEAT_SCHEDULE.values()) + 1)
    text = log.read_text(errors="replace")
    assert " ready." in text
    # (the start-up banner lists every task once, as "  . name")
    noisy = [line for line in text.splitlines()
             if any(task in line for task in periodic) and not line.strip().startswith(". ")]
    assert noisy == [], noisy[:5]


def test_it_asks_before_deleting_a_registered_model_and_the_registry_fits_the_page(app_server, browser, people):
    from webapp.jobs.models import Job
    from webapp.training.models import RewardModel

    job = Job.objects.create(project=people.project, kind="train_reward_model", created_by=people.users["bob"],
                             state="succeeded")
    deep = "/srv/reward_studio/artifacts/jobs/" + "a_rather_long_folder_name_" * 6 + "/model"  # no break points
    RewardModel.objects.create(project=people.project, job=job, name="helpful-rm", path=deep,
                               backbone="sentence-transformers/all-MiniLM-L6-v2", snapshot_path=deep + ".jsonl",
                               spec={})
    page = browser.new_page(viewport={"width": 1280, "height": 800})
    sign_in(page, app_server, "bob")
    page.goto(f"{app_server}/projects/{people.project.pk}/training/")
    _shot(page, "registry")
    assert _fits_horizontally(page)
    questions = []
    page.once("dialog", lambda dialog: (questions.append(dialog.message), dialog.dismiss()))
    page.click("#reward-models button:has-text('Delete')")
    assert questions and "helpful-rm" in questions[0]
    page.reload()
    assert RewardModel.objects.get(name="helpful-rm").deleted_at is None  # dismissed: nothing deleted
    page.once("dialog", lambda dialog: dialog.accept())
    page.click("#reward-models button:has-text('Delete')")
    page.wait_for_selector("text=Reward model deleted from the registry.")
    assert RewardModel.objects.get(name="helpful-rm").deleted_at is not None


def test_it_preselects_the_only_judge_and_keeps_the_plan_form_inside_its_card(app_server, browser, people):
    from webapp.judging.models import JudgeConfig

    config = JudgeConfig.objects.create(project=people.project, name="the-judge", model="judge-m",
                                        endpoint="http://127.0.0.1:9/v1", created_by=people.users["bob"])
    page = browser.new_page(viewport={"width": 1280, "height": 800})
    sign_in(page, app_server, "bob")
    page.goto(f"{app_server}/projects/{people.project.pk}/routing/")
    _shot(page, "routing")
    assert page.input_value("#plan-form select[name=judge_config]") == str(config.pk)
    card = page.locator("#plan-form").bounding_box()
    for name in ("strategy", "judge_config", "template"):
        box = page.locator(f"#plan-form [name={name}]").bounding_box()
        assert box["x"] + box["width"] <= card["x"] + card["width"], name


def test_it_gives_every_agreement_column_a_header(app_server, browser, people):
    page = browser.new_page(viewport={"width": 1280, "height": 800})
    sign_in(page, app_server, "alice")
    page.goto(f"{app_server}/projects/{people.project.pk}/agreement/")
    _shot(page, "agreement")
    headers = page.locator("#agreement-annotators tr").first.locator("th").all_inner_texts()
    assert all(h.strip() for h in headers), headers


def test_it_opens_a_new_rubric_quietly_and_gives_the_preview_room(app_server, browser, people):
    from tests.webapp.rubric_helpers import add_dataset, rubric_definition
    from webapp.rubrics.services import rubric_create

    add_dataset(people.project, people.users["alice"])
    page = browser.new_page(viewport={"width": 1280, "height": 800})
    sign_in(page, app_server, "bob")
    page.goto(f"{app_server}/projects/{people.project.pk}/rubrics/new/")
    _shot(page, "rubric-new")
    assert "Field required" not in page.inner_text("main")
    assert page.inner_text("#check-state") == "incomplete"

    version = rubric_create(project=people.project, user=people.users["bob"], name="Helpful",
                            definition=rubric_definition())
    page.goto(f"{app_server}/projects/{people.project.pk}/rubrics/{version.rubric_id}/edit/")
    page.locator("#preview-table").wait_for()
    _shot(page, "rubric-edit")
    fits = page.evaluate("() => { const p = document.querySelector('#rubric-check');"
                         " return p.scrollWidth <= p.clientWidth; }")
    assert fits, "the preview table is wider than its panel"
