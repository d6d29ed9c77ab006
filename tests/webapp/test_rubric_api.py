"""Rubrics through the REST API: versions, roles, preview on the project's responses, diff, YAML."""

import time

import pytest

from tests.webapp.rubric_helpers import add_dataset, api_client, rubric_definition
from webapp.rubrics.models import ImmutableVersionError, Rubric, RubricVersion
from webapp.rubrics.selectors import annotation_rubric_for

pytestmark = pytest.mark.django_db


def _url(people, rest=""):
    return f"/api/v1/projects/{people.project.pk}/rubrics{rest}"


def _create(api, people, name="Helpful", **overrides):
    response = api("post", _url(people), {"name": name, "definition": rubric_definition(name, **overrides)})
    assert response.status_code == 201, response.content
    return response.json()


def test_it_creates_a_rubric_with_version_1_holding_the_rlcore_contract(client, people):
    api = api_client(client, people.users["bob"])
    body = _create(api, people)
    assert body["number"] == 1 and body["created_by"] == "bob"
    stored = RubricVersion.objects.get(pk=body["id"]).definition
    assert stored["criteria"][2]["critical"] is True and stored["criteria"][0]["scale_max"] == 1.0  # defaults filled
    listed = api("get", _url(people)).json()
    assert [(r["name"], r["latest_version"]) for r in listed] == [("Helpful", 1)]


def test_it_saves_every_change_as_a_new_version_and_keeps_the_old_one(client, people):
    api = api_client(client, people.users["bob"])
    first = _create(api, people)
    rubric_id = Rubric.objects.get().pk
    changed = rubric_definition()
    changed["criteria"][1]["weight"] = 5
    second = api("post", _url(people, f"/{rubric_id}/versions"), {"definition": changed, "note": "shorter matters"})
    assert second.status_code == 201 and second.json()["number"] == 2
    assert api("get", _url(people, f"/{rubric_id}/versions/1")).json()["definition"]["criteria"][1]["weight"] == 2
    assert api("get", _url(people, f"/{rubric_id}/versions/2")).json()["note"] == "shorter matters"
    version = RubricVersion.objects.get(pk=first["id"])
    version.note = "rewritten history"
    with pytest.raises(ImmutableVersionError):
        version.save()
    assert RubricVersion.objects.get(pk=first["id"]).note == ""


def test_it_gives_the_annotation_rubric_as_the_latest_version_of_the_marked_one(client, people):
    api = api_client(client, people.users["bob"])
    assert annotation_rubric_for(people.project) is None
    _create(api, people, "A")
    _create(api, people, "B")
    a, b = Rubric.objects.get(name="A"), Rubric.objects.get(name="B")
    assert api("patch", _url(people, f"/{a.pk}"), {"use_for_annotation": True}).json()["use_for_annotation"] is True
    api("post", _url(people, f"/{a.pk}/versions"), {"definition": rubric_definition("A")})
    assert annotation_rubric_for(people.project) == RubricVersion.objects.get(rubric=a, number=2)
    api("patch", _url(people, f"/{b.pk}"), {"use_for_annotation": True})
    a.refresh_from_db()
    assert a.use_for_annotation is False
    assert annotation_rubric_for(people.project).rubric == b
    assert annotation_rubric_for(people.other_project) is None


@pytest.mark.parametrize("role,read,write", [
    ("owner", 200, 201), ("designer", 200, 201), ("annotator", 200, 403), ("viewer", 200, 403), ("outsider", 404, 404),
])
def test_it_lets_designers_write_and_members_read(client, people, role, read, write):
    _create(api_client(client, people.users["alice"]), people, "Existing")
    api = api_client(client, people.by_role[role])
    rubric_id = Rubric.objects.get().pk
    assert api("get", _url(people)).status_code == read
    assert api("get", _url(people, f"/{rubric_id}/versions/1")).status_code == read
    assert api("get", _url(people, f"/{rubric_id}/diff?a=1&b=1")).status_code == read
    created = api("post", _url(people), {"name": "Mine", "definition": rubric_definition("Mine")})
    assert created.status_code == write
    new_version = api("post", _url(people, f"/{rubric_id}/versions"), {"definition": rubric_definition()})
    assert new_version.status_code == write
    preview = api("post", _url(people, "/preview"), {"definition": rubric_definition()})
    assert preview.status_code == (200 if write == 201 else write)
    expected = 1 + (2 if write == 201 else 0)
    assert RubricVersion.objects.count() == expected


def _rule(kind, **fields):
    return {"kind": kind, **fields}


BAD_RUBRICS = [
    ("invalid regex", {"name": "greets", "rule": _rule("regex", pattern="(hello")},
     "criteria[0].rule.pattern", "criterion 'greets'", "missing )"),
    ("look-behind, which could backtrack", {"name": "greets", "rule": _rule("regex", pattern="(?<=a)b")},
     "criteria[0].rule.pattern", "criterion 'greets'", "look-arounds"),
    ("back-reference", {"name": "twice", "rule": _rule("regex", pattern=r"(\w+) \1")},
     "criteria[0].rule.pattern", "criterion 'twice'", "back-references"),
    ("JSON schema that does not parse", {"name": "json", "rule": _rule("json", schema={"type": "nonsense"})},
     "criteria[0].rule.schema", "criterion 'json'", "not a valid JSON Schema"),
    ("negative weight", {"name": "neg", "weight": -1}, "criteria[0].weight", "criterion 'neg'", "greater than or equal to 0"),
    ("all-zero weights", {"name": "zero", "weight": 0, "rule": _rule("length", max=5)},
     "criteria[*].weight", "rubric 'Bad'", "all weights are zero"),
    ("unknown rule kind", {"name": "odd", "rule": _rule("telepathy")}, "criteria[0].rule", "criterion 'odd'", "telepathy"),
    ("unknown field", {"name": "typo", "wieght": 2}, "criteria[0].wieght", "criterion 'typo'", "unknown field"),
    ("empty length bounds", {"name": "len", "rule": _rule("length")}, "criteria[0].rule.min", "criterion 'len'",
     "give min, max or both"),
    ("format check without its text", {"name": "fmt", "rule": _rule("format", check="starts_with")},
     "criteria[0].rule.value", "criterion 'fmt'", "needs the text"),
]


@pytest.mark.parametrize("case,criterion,field,who,words", BAD_RUBRICS, ids=[c[0] for c in BAD_RUBRICS])
def test_it_refuses_a_bad_rubric_naming_the_criterion_and_field(client, people, case, criterion, field, who, words):
    api = api_client(client, people.users["bob"])
    response = api("post", _url(people), {"name": "Bad", "definition": {"name": "Bad", "criteria": [criterion]}})
    assert response.status_code == 422, response.content
    detail = response.json()["detail"]
    assert any(d["field"] == field and who in d["message"] and words in d["message"] for d in detail), detail
    assert not Rubric.objects.exists()  # nothing half-saved


def test_it_refuses_a_reference_column_the_projects_datasets_lack(client, people):
    add_dataset(people.project, people.users["alice"])
    api = api_client(client, people.users["bob"])
    definition = {"name": "Maths", "criteria": [
        {"name": "right", "rule": _rule("answer_match", reference_column="solution", mode="numeric")}]}
    response = api("post", _url(people), {"name": "Maths", "definition": definition})
    assert response.json()["detail"] == [{
        "field": "criteria[0].rule.reference_column",
        "message": "criterion 'right': column 'solution' is not in the dataset (columns: answer, prompt, task)"}]
    definition["criteria"][0]["rule"]["reference_column"] = "answer"
    assert api("post", _url(people), {"name": "Maths", "definition": definition}).status_code == 201


def test_it_refuses_a_duplicate_criterion_and_a_duplicate_rubric_name(client, people):
    api = api_client(client, people.users["bob"])
    twice = {"name": "x", "criteria": [{"name": "a", "rule": _rule("length", max=3)}, {"name": "a"}]}
    detail = api("post", _url(people), {"name": "x", "definition": twice}).json()["detail"]
    assert detail == [{"field": "criteria[1].name", "message": "criterion 'a': duplicate criterion name; names must be unique"}]
    _create(api, people, "Helpful")
    again = api("post", _url(people), {"name": " helpful ", "definition": rubric_definition()})
    assert again.status_code == 422 and again.json()["detail"][0]["field"] == "name"
    assert Rubric.objects.count() == 1


def test_it_scores_a_catastrophic_regex_in_linear_time(client, people):
    api = api_client(client, people.users["bob"])
    definition = {"name": "r", "criteria": [{"name": "nested", "rule": _rule("regex", pattern="^(a+)+$")}]}
    started = time.monotonic()
    response = api("post", _url(people, "/preview"),
                   {"definition": definition, "rows": [{"completion": "a" * 50_000 + "b"}, {"completion": "aaaa"}]})
    assert time.monotonic() - started < 5
    assert [i["total"] for i in response.json()["items"]] == [0.0, 1.0]


def test_it_previews_a_rubric_on_the_projects_responses_with_a_breakdown_and_rank_changes(client, people):
    add_dataset(people.project, people.users["alice"])
    api = api_client(client, people.users["bob"])
    _create(api, people)
    # Unsaved edit: only a boxed answer counts now, so the boxed math answer climbs from 3rd to 1st.
    edited = rubric_definition()
    edited["criteria"] = [{"name": "boxed", "rule": {"kind": "format", "check": "boxed_answer"}}]
    preview = api("post", _url(people, "/preview"), {"definition": edited}).json()
    assert preview["baseline_version"] == 1 and preview["criteria"] == ["boxed"]
    items = {i["completion"]: i for i in preview["items"]}
    assert len(items) == 4
    boxed = items["The answer is \\boxed{4}"]
    assert (boxed["total"], boxed["rank"], boxed["baseline_total"], boxed["baseline_rank"], boxed["rank_change"]) == \
        (1.0, 1, 0.75, 3, 2)
    assert boxed["criteria"] == [{"name": "boxed", "score": 1.0, "normalized": 1.0, "passed": True,
                                  "source": "rule", "error": None}]
    polite = items["Thank you for asking! Click 'Forgot password'."]
    assert (polite["baseline_rank"], polite["rank"], polite["rank_change"]) == (1, 2, -1)
    assert preview["changed_rank"] >= 1
    saved = api("post", _url(people, "/preview"), {"definition": rubric_definition()}).json()
    url_item = next(i for i in saved["items"] if "www." in i["completion"])
    assert url_item["total"] == 0.0 and url_item["vetoed_by"] == ["no_urls"]
    assert saved["changed_rank"] == 0
    assert len(api("post", _url(people, "/preview"), {"definition": edited, "limit": 2}).json()["items"]) == 2


def test_it_previews_nothing_from_another_projects_data(client, people):
    add_dataset(people.other_project, people.users["eve"])
    api = api_client(client, people.users["bob"])
    assert api("post", _url(people, "/preview"), {"definition": rubric_definition()}).json()["items"] == []


def test_it_refuses_to_preview_an_invalid_rubric_naming_the_field(client, people):
    api = api_client(client, people.users["bob"])
    bad = rubric_definition()
    bad["criteria"][0]["rule"] = _rule("regex", pattern="[")
    response = api("post", _url(people, "/preview"), {"definition": bad})
    assert response.status_code == 422
    assert response.json()["detail"][0]["field"] == "criteria[0].rule.pattern"


def test_it_diffs_two_versions_criterion_by_criterion(client, people):
    api = api_client(client, people.users["bob"])
    _create(api, people)
    rubric_id = Rubric.objects.get().pk
    edited = rubric_definition()
    polite, short, no_urls = edited["criteria"]
    short["weight"] = 3
    polite["rule"]["texts"] = ["please"]
    edited["criteria"] = [no_urls, polite, short, {"name": "answers", "rule": _rule("format", check="boxed_answer")}]
    edited["aggregation"] = "saturating"
    api("post", _url(people, f"/{rubric_id}/versions"), {"definition": edited})
    diff = api("get", _url(people, f"/{rubric_id}/diff?a=1&b=2")).json()
    assert diff["changed"] is True
    assert diff["fields"] == [{"field": "aggregation", "old": "weighted_mean", "new": "saturating"}]
    by_name = {i["name"]: i for i in diff["items"]}
    assert by_name["answers"]["status"] == "added"
    assert {"field": "weight", "old": "2.0", "new": "3.0"} in by_name["short"]["changes"]
    assert {"field": "rule.texts", "old": '["please", "thank"]', "new": '["please"]'} in by_name["polite"]["changes"]
    assert by_name["no_urls"]["changes"] == [{"field": "position", "old": "3", "new": "1"}]
    assert api("get", _url(people, f"/{rubric_id}/diff?a=1&b=1")).json()["changed"] is False
    assert api("get", _url(people, f"/{rubric_id}/diff?a=1&b=9")).status_code == 404


def test_it_exports_yaml_and_imports_it_back_as_a_new_version(client, people):
    api = api_client(client, people.users["bob"])
    _create(api, people)
    rubric_id = Rubric.objects.get().pk
    exported = api("get", _url(people, f"/{rubric_id}/versions/1/yaml"))
    assert exported["Content-Type"].startswith("application/yaml")
    text = exported.content.decode().replace("max: 60", "max: 80")
    imported = api("post", _url(people, "/import"), {"yaml": text, "note": "from a file"})
    assert imported.status_code == 201 and imported.json()["number"] == 2
    assert RubricVersion.objects.get(number=2).definition["criteria"][1]["rule"]["max"] == 80


def test_it_names_the_line_of_a_bad_field_in_imported_yaml(client, people):
    api = api_client(client, people.users["bob"])
    text = "name: Imported\ncriteria:\n  - name: greets\n    rule:\n      kind: regex\n      pattern: '(oops'\n"
    detail = api("post", _url(people, "/import"), {"yaml": text}).json()["detail"]
    assert detail[0]["field"] == "criteria[0].rule.pattern"
    assert detail[0]["message"].startswith("YAML, line 6: criterion 'greets'")
    broken = api("post", _url(people, "/import"), {"yaml": "name: x\ncriteria: [\n"})
    assert broken.status_code == 422 and broken.json()["detail"][0]["field"] == "yaml"
    assert "line 3" in broken.json()["detail"][0]["message"]
    assert not Rubric.objects.exists()


def _grateful_judge():
    """Grades 'grateful' 1 when the response thanks, else 0 (reads the default grade prompt)."""
    from rlcore.judges.testing_server import ScriptedReply

    def policy(body):
        text = str(body["messages"][-1]["content"]).lower()
        return ScriptedReply(content=f"Score: {1 if 'thank' in text else 0}")

    return policy


def test_it_previews_criteria_without_a_rule_with_a_judge_on_request(client, people):
    from rlcore.judges.testing_server import ChatCompletionsServer
    from tests.conftest import PASSWORD
    from webapp.judging.models import JudgeConfig

    add_dataset(people.project, people.users["alice"])
    api = api_client(client, people.users["bob"])
    definition = rubric_definition(criteria=[
        {"name": "grateful", "description": "Does the response express gratitude?"},
        {"name": "short", "weight": 2, "rule": {"kind": "length", "max": 60}}])
    unjudged = api("post", _url(people, "/preview"), {"definition": definition}).json()
    assert unjudged["judged_by"] is None and all(i["criteria"][0]["score"] is None for i in unjudged["items"])

    with ChatCompletionsServer(_grateful_judge()) as server:
        config = JudgeConfig.objects.create(project=people.project, name="grader", endpoint=server.base_url,
                                            model="m", created_by=people.users["bob"])
        judged = api("post", _url(people, "/preview"), {"definition": definition, "judge_config_id": config.pk})
        assert judged.status_code == 200, judged.content
        body = judged.json()
        assert [i["criteria"][0]["score"] for i in body["items"]] == [1.0, 0.0, 0.0, 1.0]
        assert body["judged_by"] and body["judge_errors"] == [] and server.stats.requests == 4
        assert body["items"][0]["total"] == pytest.approx(1.0)  # both criteria pass

        client.login(username="bob", password=PASSWORD)
        form = {"name": "Helpful", "aggregation": "weighted_mean", "saturation": "3", "description": "",
                "criteria[0].name": "grateful", "criteria[0].description": "Does the response express gratitude?",
                "criteria[0].weight": "1", "criteria[0].rule.kind": "",
                "criteria[1].name": "short", "criteria[1].weight": "2", "criteria[1].rule.kind": "length",
                "criteria[1].rule.max": "60"}
        editor_check = client.post(f"/projects/{people.project.pk}/rubrics/check/", form).content.decode()
        assert 'id="judge-preview"' in editor_check and "grader (m)" in editor_check
        page = client.post(f"/projects/{people.project.pk}/rubrics/judge-preview/",
                           {**form, "judge_config_id": config.pk}).content.decode()
        assert 'id="judged-by"' in page and server.stats.requests == 8

    gone = api("post", _url(people, "/preview"), {"definition": definition, "judge_config_id": config.pk}).json()
    assert gone["judge_errors"] and all(i["criteria"][0]["score"] is None for i in gone["items"])
    too_many = api("post", _url(people, "/preview"), {"definition": definition, "judge_config_id": config.pk,
                                                      "rows": [{"prompt": "p", "completion": "c"}] * 9})
    assert too_many.status_code == 422 and too_many.json()["detail"][0]["field"] == "rows"
    config.backend, config.model = "local_hf", "/models/judge"
    config.save()
    local = api("post", _url(people, "/preview"), {"definition": definition, "judge_config_id": config.pk})
    assert local.status_code == 422 and local.json()["detail"][0]["field"] == "judge_config"


# sympy expands this integer power in C holding the GIL: in a web thread it froze the whole process
TOWER = "\\boxed{9^{9^{9^{9}}}}"


def test_it_stops_a_preview_at_its_time_budget_and_says_how_far_it_got(client, people, settings):
    settings.RUBRIC_PREVIEW_BUDGET_SECONDS = 2.0
    api = api_client(client, people.users["bob"])
    definition = {"name": "m", "criteria": [
        {"name": "correct", "rule": _rule("answer_match", reference_column="answer", mode="math")}]}
    rows = [{"completion": "so \\boxed{\\frac{1}{2}}", "columns": {"answer": "0.5"}}]
    rows += [{"completion": f"it is {TOWER}", "columns": {"answer": "1"}} for _ in range(6)]
    started = time.monotonic()
    response = api("post", _url(people, "/preview"), {"definition": definition, "rows": rows})
    elapsed = time.monotonic() - started
    assert response.status_code == 200, response.content
    assert elapsed < 2.0 + 1.5, elapsed  # the budget, plus the request around it
    body = response.json()
    budget = body["budget"]
    assert budget["stopped"] and budget["of"] == 7 and budget["scored"] == len(body["items"]) < 7
    assert budget["message"].startswith(f"Stopped after {budget['scored']} of 7 responses")
    assert all(item["total"] == 1.0 for item in body["items"][:1])  # what was scored is scored right


def test_it_stops_a_spec_check_at_its_time_budget_on_the_page(client, people, settings):
    settings.RUBRIC_PREVIEW_BUDGET_SECONDS = 1.0
    add_dataset(people.project, people.users["alice"],
                rows=[("What is 1?", f"{TOWER}", {"task": "math", "answer": "1"}) for _ in range(5)])
    client.force_login(people.users["bob"])
    text = "name: s\ncomponents:\n  - kind: verifier\n    name: correct\n    reference_column: answer\n    mode: math\n"
    started = time.monotonic()
    page = client.post(f"/projects/{people.project.pk}/reward-specs/check/", {"yaml": text}).content.decode()
    assert time.monotonic() - started < 1.0 + 1.5
    assert 'id="preview-budget"' in page and "of 5 responses" in page and "RUBRIC_PREVIEW_BUDGET_SECONDS" in page
