"""Job dashboards in headless Chromium: panels grouped as TRL names metrics (reward first), EMA smoothing,
the compare page's cursor and spec differences, and a panel's CSV download. Metric points are seeded
directly under the names TRL's GRPOTrainer logs (trl/trainer/grpo_trainer.py ``_metrics``)."""

import csv
import io
import math

import pytest
from django.conf import settings
from django.test import Client

from tests.conftest import wait_for
from webapp.jobs.models import Job, JobState, MetricPoint
from webapp.jobs.selectors import run_colours

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.browser]

STEPS = 12
# name -> value at step s: distinct, so a value read back names its series and step.
GRPO_SERIES = {
    "clip_ratio/low_mean": lambda s: 0.0,
    "clip_ratio/high_max": lambda s: 0.01 * s,
    "clip_ratio/region_mean": lambda s: 0.0,
    "completions/mean_length": lambda s: 100 + s,
    "completions/max_length": lambda s: 200 + s,
    "completions/clipped_ratio": lambda s: 0.5,
    "entropy": lambda s: 2.0 - 0.1 * s,
    "epoch": lambda s: s / STEPS,
    "frac_reward_zero_std": lambda s: 0.25,
    "grad_norm": lambda s: 1.0 + s,
    "kl": lambda s: 0.001 * s,
    "learning_rate": lambda s: 1e-6,
    "loss": lambda s: 0.1,
    "reward": lambda s: (-1) ** s * 0.5 + 0.1 * s,  # zig-zag: smoothing visibly changes it
    "reward_std": lambda s: 0.3,
    "rewards/format/mean": lambda s: 0.05 * s,
    "rewards/format/std": lambda s: 0.1,
    "rewards/length_penalty/mean": lambda s: -0.02 * s,
}


def _grpo_job(people, title="grpo run", scale=1.0, spec=None):
    job = Job.objects.create(project=people.project, kind="train_grpo", created_by=people.users["alice"],
                             state=JobState.SUCCEEDED, title=title, progress_step=STEPS, progress_total=STEPS,
                             spec=spec or {"learning_rate": 1e-6, "num_generations": 8, "output_dir": f"/tmp/{title}"})
    MetricPoint.objects.bulk_create(MetricPoint(job=job, step=step, name=name, value=scale * value(step))
                                    for step in range(1, STEPS + 1) for name, value in GRPO_SERIES.items())
    return job


def _page(browser, app_server, user):
    client = Client()
    client.force_login(user)
    context = browser.new_context(accept_downloads=True)
    context.add_cookies([{"name": settings.SESSION_COOKIE_NAME, "url": app_server,
                          "value": client.cookies[settings.SESSION_COOKIE_NAME].value}])
    page = context.new_page()
    page.csp_violations = []
    page.on("console", lambda msg: page.csp_violations.append(msg.text) if "Content Security Policy" in msg.text else None)
    page.on("pageerror", lambda error: page.csp_violations.append(f"page error: {error}"))
    return page


def _wait_drawn(page, panels: int, points: int):
    # Polled from here: wait_for_function evaluates its predicate with eval, which the page's CSP refuses.
    wait_for(lambda: int(page.get_attribute("#job-dashboard", "data-points-seen") or 0) >= points
             and int(page.get_attribute("#job-dashboard", "data-panels-drawn") or 0) >= panels, 30, 0.1,
             "every panel to be drawn")


def _plot_data(page, panel: str) -> list[list]:
    return page.evaluate("(key) => window.jobDashboard.charts[key].plot.data.map((column) => Array.from(column))", panel)


def _panel_count() -> int:
    # reward, reward-std, frac, kl, entropy, length, clipped-ratio, clip-ratio, loss, grad-norm, learning-rate, epoch
    return 12


def test_it_shows_the_reward_panel_first_with_its_components_on_one_axis(app_server, browser, people):
    job = _grpo_job(people)
    page = _page(browser, app_server, people.users["dave"])
    page.goto(f"{app_server}/projects/{people.project.pk}/jobs/{job.pk}/")
    _wait_drawn(page, _panel_count(), STEPS * len(GRPO_SERIES))
    order = page.eval_on_selector_all("#charts .chart", "(els) => els.map((el) => el.dataset.metric)")
    assert order[0] == "reward", order
    groups = page.eval_on_selector_all("#charts .panel-group", "(els) => els.map((el) => el.dataset.group)")
    assert groups == ["reward", "policy", "lengths", "clipping", "optimisation", "other"]
    # The deciding panels in TRL's order, the clip ratios after lengths, what TRL logs besides at the end.
    assert order.index("kl") < order.index("length") < order.index("clip-ratio") < order.index("loss") < order.index("epoch")
    labels = page.evaluate("() => window.jobDashboard.charts.reward.plot.series.map((s) => s.label)")
    assert labels == ["step", "reward", "rewards/format/mean", "rewards/length_penalty/mean"]  # one panel, one y axis
    assert page.evaluate("() => window.jobDashboard.charts.reward.plot.axes.length") == 2
    assert "rewards/format/std" in page.evaluate("() => window.jobDashboard.charts['reward-std'].plot.series.map((s) => s.label)")
    assert f"{STEPS} points each" in page.inner_text(".chart[data-metric='reward'] .note")
    # Folding a group is remembered for the project.
    page.click("details[data-group='clipping'] > summary")
    page.reload()
    _wait_drawn(page, _panel_count() - 2, STEPS * len(GRPO_SERIES))
    assert page.evaluate("() => document.querySelector(\"details[data-group='clipping']\").open") is False
    assert page.evaluate("() => document.querySelector(\"details[data-group='reward']\").open") is True
    assert not page.csp_violations, page.csp_violations


def _hand_ema(values, weight):
    """TensorBoard's debiased EMA, written out: s_i = w s_(i-1) + (1-w) x_i, shown as s_i / (1 - w^i)."""
    out, last = [], 0.0
    for i, x in enumerate(values, start=1):
        last = weight * last + (1 - weight) * x
        out.append(last / (1 - weight ** i))
    return out


def test_it_changes_the_drawn_line_when_smoothing_changes(app_server, browser, people):
    job = _grpo_job(people)
    page = _page(browser, app_server, people.users["dave"])
    page.goto(f"{app_server}/projects/{people.project.pk}/jobs/{job.pk}/")
    _wait_drawn(page, _panel_count(), STEPS * len(GRPO_SERIES))
    raw = [GRPO_SERIES["reward"](s) for s in range(1, STEPS + 1)]
    before = _plot_data(page, "reward")
    assert before[0] == list(range(1, STEPS + 1)) and before[1] == pytest.approx(raw)
    page.locator("#dash-smoothing").fill("0.8")
    wait_for(lambda: len(_plot_data(page, "reward")) == 1 + 2 * 3, 10, 0.1, "the smoothed series to be drawn")
    after = _plot_data(page, "reward")
    assert after[1] == pytest.approx(raw)  # the raw series, faint behind
    assert after[2] == pytest.approx(_hand_ema(raw, 0.8))
    assert after[2] != pytest.approx(before[1])
    assert "EMA smoothing 0.8" in page.inner_text(".chart[data-metric='reward'] .note")
    page.reload()  # remembered per project
    _wait_drawn(page, _panel_count(), STEPS * len(GRPO_SERIES))
    assert page.input_value("#dash-smoothing") == "0.8"
    assert _plot_data(page, "reward")[2] == pytest.approx(_hand_ema(raw, 0.8))
    assert not page.csp_violations, page.csp_violations


def test_it_shows_both_runs_values_at_the_cursor_and_what_differs_in_their_specs(app_server, browser, people):
    first = _grpo_job(people, "lr 1e-6", spec={"learning_rate": 1e-6, "num_generations": 8, "output_dir": "/tmp/a",
                                               "reward_spec": {"components": [{"name": "format", "weight": 1.0}]}})
    second = _grpo_job(people, "lr 3e-6", scale=2.0, spec={"learning_rate": 3e-6, "num_generations": 8, "output_dir": "/tmp/b",
                                                           "reward_spec": {"components": [{"name": "format", "weight": 0.5}]}})
    page = _page(browser, app_server, people.users["dave"])
    page.goto(f"{app_server}/projects/{people.project.pk}/jobs/compare/?ids={first.pk},{second.pk}")
    _wait_drawn(page, _panel_count(), 2 * STEPS * len(GRPO_SERIES))
    fields = page.eval_on_selector_all("#spec-differences tr td:first-child", "(els) => els.map((el) => el.textContent)")
    assert fields == ["learning_rate", "reward_spec.components[0].weight"]  # not num_generations, not output_dir
    assert page.inner_text("#spec-differences").count("3e-06") == 1
    # Colours: each run's own, the same as the page's table says.
    colours = run_colours([first.pk, second.pk])
    strokes = page.evaluate("() => window.jobDashboard.charts.kl.plot.series.slice(1).map((s) => s._stroke || s.stroke)")
    assert len(set(colours.values())) == 2
    # Hover the reward panel at step 5: its legend reads both runs' rewards there.
    step = 5
    page.locator(".chart[data-metric='reward'] .u-over").scroll_into_view_if_needed()
    box = page.locator(".chart[data-metric='reward'] .u-over").bounding_box()
    left = page.evaluate("(step) => window.jobDashboard.charts.reward.plot.valToPos(step, 'x')", step)
    page.mouse.move(box["x"] + left, box["y"] + box["height"] / 2)
    expected = {f"#{first.pk} lr 1e-6 · reward": GRPO_SERIES["reward"](step),
                f"#{second.pk} lr 3e-6 · reward": 2 * GRPO_SERIES["reward"](step)}

    def legend() -> dict[str, str]:
        rows = page.eval_on_selector_all(".chart[data-metric='reward'] .u-legend .u-series",
                                         "(rows) => rows.map((r) => [r.querySelector('.u-label').textContent, r.querySelector('.u-value').textContent])")
        return dict(rows)

    wait_for(lambda: legend().get("step") == str(step), 10, 0.1, f"the cursor to reach the step ({legend()})")
    values = legend()
    for label, value in expected.items():
        assert float(values[label]) == pytest.approx(value, rel=1e-4), values
    # The cursor is shared: the KL panel reads the same step.
    kl_step = page.eval_on_selector_all(".chart[data-metric='kl'] .u-legend .u-series .u-value", "(els) => els[0].textContent")
    assert kl_step == str(step)
    assert [s.lower() for s in strokes] == [colours[first.pk], colours[second.pk]]
    assert not page.csp_violations, page.csp_violations


def test_it_downloads_a_panels_points_as_csv(app_server, browser, people):
    job = _grpo_job(people)
    page = _page(browser, app_server, people.users["dave"])
    page.goto(f"{app_server}/projects/{people.project.pk}/jobs/{job.pk}/")
    _wait_drawn(page, _panel_count(), STEPS * len(GRPO_SERIES))
    with page.expect_download() as info:
        page.click(".chart[data-metric='reward'] button.csv")
    download = info.value
    assert download.suggested_filename == f"jobs-{job.pk}-reward.csv"
    rows = list(csv.DictReader(io.StringIO(open(download.path(), encoding="utf-8").read())))
    got = {(row["metric"], int(row["step"])): float(row["value"]) for row in rows}
    names = ("reward", "rewards/format/mean", "rewards/length_penalty/mean")
    assert got == pytest.approx({(name, step): GRPO_SERIES[name](step) for name in names for step in range(1, STEPS + 1)})
    assert all(row["job"] == str(job.pk) and row["time"].endswith("Z") for row in rows)
    with page.expect_download() as info:
        page.click(".chart[data-metric='reward'] button.png")
    png = open(info.value.path(), "rb").read()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 1000
    assert not page.csp_violations, page.csp_violations


def test_it_zooms_every_panel_to_the_range_dragged_on_one(app_server, browser, people):
    job = _grpo_job(people)
    page = _page(browser, app_server, people.users["dave"])
    page.goto(f"{app_server}/projects/{people.project.pk}/jobs/{job.pk}/")
    _wait_drawn(page, _panel_count(), STEPS * len(GRPO_SERIES))
    page.locator(".chart[data-metric='kl'] .u-over").scroll_into_view_if_needed()
    box = page.locator(".chart[data-metric='kl'] .u-over").bounding_box()
    start, end = (page.evaluate("(s) => window.jobDashboard.charts.kl.plot.valToPos(s, 'x')", s) for s in (3, 7))
    page.mouse.move(box["x"] + start, box["y"] + 20)
    page.mouse.down()
    page.mouse.move(box["x"] + (start + end) / 2, box["y"] + 30)
    page.mouse.move(box["x"] + end, box["y"] + 40)
    page.mouse.up()
    scales = lambda: page.evaluate(
        "() => Object.values(window.jobDashboard.charts).filter((c) => c.plot).map((c) => [c.plot.scales.x.min, c.plot.scales.x.max])")
    wait_for(lambda: all(lo == pytest.approx(3, abs=0.2) and hi == pytest.approx(7, abs=0.2) for lo, hi in scales()), 10, 0.1,
             "every panel to zoom to steps 3-7")
    page.click("#dash-reset-zoom")
    wait_for(lambda: all(lo <= 1 and hi >= STEPS for lo, hi in scales()), 10, 0.1, "every panel to zoom out")
    assert not math.isnan(scales()[0][0])
