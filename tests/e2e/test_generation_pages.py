"""In headless Chromium, under the pages' CSP: a designer registers a local policy folder on the Training page,
generates responses on a prompt set with a real worker, and follows the job page to the new dataset version,
whose provenance names the policy, the round, the sampling settings and the count it rests on."""

import json
from pathlib import Path

import pytest

from rlcore.training.tiny_models import build_tiny_causal_lm
from tests.conftest import sign_in

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.browser]


def _prompt_set(people, tmp_path, n):
    from webapp.datasets.services import dataset_create, dataset_import_run

    path = tmp_path / "prompts.jsonl"
    path.write_text("".join(json.dumps({"prompt": f"hello w{i} question"}) + "\n" for i in range(n)))
    dataset = dataset_create(project=people.project, user=people.users["bob"], name="held-out", path=path)
    return dataset_import_run(dataset_id=dataset.pk)


def _watch_csp(page, problems: list[str]) -> None:
    page.on("console", lambda msg: problems.append(msg.text) if "Content Security Policy" in msg.text else None)
    page.on("pageerror", lambda error: problems.append(f"page error: {error}"))


def test_it_registers_a_folder_policy_generates_and_shows_the_version_with_provenance(
        app_server, celery_workers, service_env, browser, people, tmp_path):
    from webapp.datasets.models import Dataset, Response
    from webapp.training.models import Policy

    # MODEL_ROOTS of the web server and the workers is <REWARD_STUDIO_VAR>/models
    folder = build_tiny_causal_lm(Path(service_env["REWARD_STUDIO_VAR"]) / "models" / "browser-policy")
    prompts = _prompt_set(people, tmp_path, 3)
    page = browser.new_page()
    problems: list[str] = []
    _watch_csp(page, problems)
    sign_in(page, app_server, "bob")  # a designer
    csp = page.goto(f"{app_server}/projects/{people.project.pk}/training/").headers["content-security-policy"]
    script_src = next(d for d in csp.split(";") if d.strip().startswith("script-src"))
    assert "'unsafe-inline'" not in script_src and "'unsafe-eval'" not in script_src

    register = page.locator("form#policy-register")
    register.locator("select[name=source]").select_option("folder")
    register.locator("input[name=location]").fill(str(folder))
    register.locator("input[name=name]").fill("sft start")
    register.locator("button[type=submit]").click()
    page.wait_for_selector("#policies tr[data-policy]")
    [policy] = Policy.objects.filter(project=people.project)
    row = page.locator(f"#policies tr[data-policy='{policy.pk}']")
    assert "sft start" in row.inner_text() and str(folder) in row.inner_text()
    assert "not trained here: no metrics" in row.inner_text()

    generate = page.locator("form#generate")
    generate.locator("select[name=dataset]").select_option(str(prompts.pk))
    generate.locator(f"input[name=policies][value='{policy.pk}']").check()
    generate.locator("input[name=round]").fill("2")
    generate.locator("input[name=samples_per_prompt]").fill("2")
    generate.locator("input[name=max_new_tokens]").fill("5")
    generate.locator("input[name=seed]").fill("11")
    generate.locator("button[type=submit]").click()
    page.wait_for_url(f"{app_server}/projects/{people.project.pk}/jobs/*/")
    # the job page updates itself as the worker finishes (no reload): the version link appears
    page.wait_for_selector("#generated-version a", timeout=180_000)
    assert page.locator("#job-state").inner_text() == "succeeded"
    assert "6 responses to 3 prompts" in page.locator("#generated-version").inner_text()
    assert "partial" not in page.locator("#generated-version").inner_text()

    page.click("#generated-version a")
    page.wait_for_selector("#provenance")
    version = Dataset.objects.get(parent=prompts)
    assert page.url.rstrip("/").endswith(f"/datasets/{version.pk}")
    provenance = page.locator("#provenance")
    assert f"version {version.version} of held-out" in provenance.locator("h2").inner_text()
    assert "Complete: 6 of 6 responses" in provenance.inner_text() and "Round 2." in provenance.inner_text()
    [policy_row] = provenance.locator("table.provenance-policies tr").all()[1:]
    cells = policy_row.locator("td").all_inner_texts()
    assert cells[0] == "sft start" and cells[2] == "2" and cells[3] == "6"
    sampling = provenance.locator("p.sampling").inner_text()
    assert "seed 11" in sampling and "max_new_tokens 5" in sampling
    assert Response.objects.filter(prompt__dataset=version, policy=policy).count() == 6
    assert problems == []
