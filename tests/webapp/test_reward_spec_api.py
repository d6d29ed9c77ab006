"""Reward specs through the REST API: composing from saved rubrics, save-time validation, versions, YAML, preview."""

import json

import pytest

from tests.webapp.rubric_helpers import add_dataset, api_client, rubric_definition
from webapp.rubrics.models import RewardSpec, RewardSpecVersion

pytestmark = pytest.mark.django_db


def _url(people, rest=""):
    return f"/api/v1/projects/{people.project.pk}/reward-specs{rest}"


def _spec(*components, **fields):
    return {"name": "mixed", "components": list(components), **fields}


RULES = {"kind": "rubric_rules", "name": "helpful", "rubric": rubric_definition()}
VERIFIER = {"kind": "verifier", "name": "correct", "reference_column": "answer", "mode": "numeric",
            "when": {"column": "task", "equals": "math"}}
PENALTY = {"kind": "length_penalty", "name": "overlong", "max_length": 12, "cache_length": 4, "unit": "words",
           "weight": 0.5}


@pytest.fixture
def designer(client, people):
    add_dataset(people.project, people.users["alice"])
    return api_client(client, people.users["bob"])


def _save_rubric(api, people, name="Helpful", definition=None):
    response = api("post", f"/api/v1/projects/{people.project.pk}/rubrics",
                   {"name": name, "definition": definition or rubric_definition(name)})
    assert response.status_code == 201
    return response.json()


def test_it_composes_a_spec_from_a_saved_rubric_version_and_records_which(designer, people):
    _save_rubric(designer, people)
    changed = rubric_definition()
    changed["criteria"][1]["weight"] = 9
    rubric_id = designer("get", f"/api/v1/projects/{people.project.pk}/rubrics").json()[0]["id"]
    designer("post", f"/api/v1/projects/{people.project.pk}/rubrics/{rubric_id}/versions", {"definition": changed})
    pinned = {"kind": "rubric_rules", "name": "helpful", "rubric_path": "rubric://Helpful@1"}
    response = designer("post", _url(people), {"name": "mixed", "definition": _spec(pinned, VERIFIER, PENALTY)})
    assert response.status_code == 201, response.content
    body = response.json()
    assert body["number"] == 1 and body["rubric_versions"] == [{"id": body["rubric_versions"][0]["id"],
                                                                "rubric": "Helpful", "number": 1}]
    inlined = body["definition"]["components"][0]
    assert inlined["rubric_path"] is None and inlined["rubric"]["criteria"][1]["weight"] == 2.0
    latest = designer("post", _url(people, f"/{RewardSpec.objects.get().pk}/versions"),
                      {"definition": _spec({**pinned, "rubric_path": "rubric://helpful"}, VERIFIER)}).json()
    assert latest["number"] == 2 and latest["rubric_versions"][0]["number"] == 2
    assert latest["definition"]["components"][0]["rubric"]["criteria"][1]["weight"] == 9.0


def _field_errors(response):
    assert response.status_code == 422, response.content
    return {(d["field"], d["message"]) for d in response.json()["detail"]}


def _bad_regex_rubric(pattern):
    rubric = rubric_definition()
    rubric["criteria"][0] = {"name": "greets", "rule": {"kind": "regex", "pattern": pattern}}
    return {**RULES, "rubric": rubric}


BAD_SPECS = [
    ("invalid regex in a rubric", _spec(_bad_regex_rubric("(hi")),
     "components[0].rubric.criteria[0].rule.pattern", "component 'helpful', criterion 'greets'", "missing )"),
    ("catastrophic regex (look-around) in a rubric", _spec(_bad_regex_rubric("(a+)+(?=b)")),
     "components[0].rubric.criteria[0].rule.pattern", "criterion 'greets'", "look-arounds"),
    ("JSON schema that does not parse", _spec({**RULES, "rubric": {"name": "j", "criteria": [
        {"name": "is_json", "rule": {"kind": "json", "schema": {"type": 12}}}]}}),
     "components[0].rubric.criteria[0].rule.schema", "criterion 'is_json'", "not a valid JSON Schema"),
    ("all-zero weights", _spec({**VERIFIER, "weight": 0}, {**PENALTY, "weight": 0}),
     "components[*].weight", "spec 'mixed'", "all weights are zero"),
    ("negative total weight", _spec({**VERIFIER, "weight": 0.5}, {**PENALTY, "weight": -2}),
     "components[*].weight", "spec 'mixed'", "weights sum to -1.5"),
    ("unknown reference column", _spec({**VERIFIER, "reference_column": "gold"}),
     "components[0].reference_column", "component 'correct'", "column 'gold' is not in the dataset (columns: answer, prompt, task)"),
    ("unknown condition column", _spec({**VERIFIER, "when": {"column": "kind", "equals": "math"}}),
     "components[0].when.column", "component 'correct'", "column 'kind' is not in the dataset"),
    ("unknown reference column in a rubric rule", _spec({**RULES, "rubric": {"name": "m", "criteria": [
        {"name": "right", "rule": {"kind": "answer_match", "reference_column": "solution"}}]}}),
     "components[0].rubric.criteria[0].rule.reference_column", "criterion 'right'", "column 'solution' is not in"),
    ("missing reward model path", _spec({"kind": "reward_model", "name": "rm", "path": "/no/such/checkpoint"}),
     "components[0].path", "component 'rm'", "/no/such/checkpoint does not exist"),
    ("unknown saved rubric", _spec({"kind": "rubric_rules", "name": "r", "rubric_path": "rubric://Nope"}),
     "components[0].rubric_path", "component 'r'", "no rubric named 'Nope'"),
    ("unknown rubric version", _spec({"kind": "rubric_rules", "name": "r", "rubric_path": "rubric://Helpful@7"}),
     "components[0].rubric_path", "component 'r'", "has no version 7"),
    ("PAR without a reference column", _spec(VERIFIER, normalization="par"),
     "par_reference_column", "spec 'mixed'", "PAR needs the column"),
    ("unknown component kind", _spec({"kind": "vibes", "name": "v"}), "components[0]", "component 'v'", "vibes"),
    ("misspelt field of a process reward model", _spec({"kind": "process_reward_model", "name": "prm", "path": "/p",
                                                       "agregation": "min"}),
     "components[0].agregation", "component 'prm'", "unknown field; remove it"),
    ("penalty zone longer than the limit", _spec({**PENALTY, "cache_length": 40}),
     "components[0].cache_length", "component 'overlong'", "exceeds max_length"),
]


@pytest.mark.parametrize("case,definition,field,who,words", BAD_SPECS, ids=[c[0] for c in BAD_SPECS])
def test_it_refuses_a_bad_spec_at_save_time_naming_component_and_field(designer, people, case, definition, field,
                                                                       who, words):
    _save_rubric(designer, people)
    errors = _field_errors(designer("post", _url(people), {"name": "mixed", "definition": definition}))
    assert any(f == field and who in m and words in m for f, m in errors), errors
    assert not RewardSpec.objects.exists() and not RewardSpecVersion.objects.exists()


def test_it_accepts_a_reward_model_checkpoint_directory(designer, people, tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"architectures": ["BertForSequenceClassification"]}))
    (tmp_path / "model.safetensors").write_bytes(b"")
    (tmp_path / "tokenizer.json").write_text("{}")
    rm = {"kind": "reward_model", "name": "rm", "path": str(tmp_path)}
    assert designer("post", _url(people), {"name": "rm", "definition": _spec(rm)}).status_code == 201
    (tmp_path / "config.json").write_text(json.dumps({"architectures": ["GPT2LMHeadModel"]}))
    errors = _field_errors(designer("post", _url(people), {"name": "rm2", "definition": _spec(rm)}))
    assert any("not a sequence-classification" in m for _, m in errors)


def test_it_lets_designers_write_and_members_read_specs(client, people):
    owner = api_client(client, people.users["alice"])
    assert owner("post", _url(people), {"name": "m", "definition": _spec(PENALTY)}).status_code == 201
    spec_id = RewardSpec.objects.get().pk
    for role, read, write in (("viewer", 200, 403), ("annotator", 200, 403), ("outsider", 404, 404),
                              ("designer", 200, 201)):
        api = api_client(client, people.by_role[role])
        assert api("get", _url(people)).status_code == read
        assert api("get", _url(people, f"/{spec_id}/versions/1/yaml")).status_code == read
        assert api("post", _url(people, f"/{spec_id}/versions"), {"definition": _spec(PENALTY)}).status_code == write
        assert api("post", _url(people, "/import"), {"yaml": "name: other\ncomponents: []"}).status_code in (
            write, 422)
    assert RewardSpecVersion.objects.count() == 2


def test_it_exports_yaml_imports_it_as_a_new_version_and_diffs_component_by_component(designer, people):
    designer("post", _url(people), {"name": "mixed", "definition": _spec(RULES, VERIFIER)})
    spec_id = RewardSpec.objects.get().pk
    text = designer("get", _url(people, f"/{spec_id}/versions/1/yaml")).content.decode()
    text = text.replace("mode: numeric", "mode: exact") + "\n"
    text = text.replace("normalization: none", "normalization: group_zscore")
    imported = designer("post", _url(people, "/import"), {"yaml": text})
    assert imported.status_code == 201 and imported.json()["number"] == 2
    diff = designer("get", _url(people, f"/{spec_id}/diff?a=1&b=2")).json()
    assert diff["fields"] == [{"field": "normalization", "old": "none", "new": "group_zscore"}]
    by_name = {i["name"]: i for i in diff["items"]}
    assert by_name["helpful"]["status"] == "unchanged"
    assert by_name["correct"]["changes"] == [{"field": "mode", "old": "numeric", "new": "exact"}]


def test_it_names_the_yaml_line_of_a_bad_field_on_import(designer, people):
    text = "name: imported\ncomponents:\n  - kind: verifier\n    name: correct\n    reference_column: gold\n"
    errors = _field_errors(designer("post", _url(people, "/import"), {"yaml": text}))
    assert ("components[0].reference_column",
            "YAML, line 5: component 'correct': column 'gold' is not in the dataset (columns: answer, prompt, task)"
            ) in errors
    broken = _field_errors(designer("post", _url(people, "/import"), {"yaml": "name: x\ncomponents:\n  - {kind: \n"}))
    assert any(f == "yaml" and "line" in m for f, m in broken)
    assert not RewardSpec.objects.exists()


def test_it_previews_a_spec_on_the_projects_responses_skipping_model_components(designer, people):
    rm = {"kind": "reward_model", "name": "rm", "path": "org/some-model"}
    response = designer("post", _url(people, "/preview"), {"definition": _spec(RULES, VERIFIER, PENALTY, rm)})
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["components"] == ["helpful", "correct", "overlong"] and body["skipped"] == ["rm"]
    by_text = {i["completion"]: i for i in body["items"]}
    assert by_text["The answer is \\boxed{4}"]["components"]["correct"] == 1.0
    assert by_text["It is 5, thanks"]["components"]["correct"] == 0.0
    assert by_text["Thank you for asking! Click 'Forgot password'."]["components"]["correct"] is None  # chat row


def test_it_refuses_a_duplicate_spec_name(designer, people):
    designer("post", _url(people), {"name": "mixed", "definition": _spec(PENALTY)})
    errors = _field_errors(designer("post", _url(people), {"name": "MIXED", "definition": _spec(PENALTY)}))
    assert errors == {("name", "A reward spec named 'MIXED' already exists in this project.")}


def test_it_removes_rubrics_and_specs_only_while_nothing_recorded_uses_them(designer, people):
    from webapp.jobs.services import job_create
    from webapp.rubrics.models import Rubric

    _save_rubric(designer, people, "Used")
    _save_rubric(designer, people, "Spare")
    used, spare = Rubric.objects.get(name="Used"), Rubric.objects.get(name="Spare")
    pinned = {"kind": "rubric_rules", "name": "helpful", "rubric_path": "rubric://Used@1"}
    assert designer("post", _url(people), {"name": "mixed", "definition": _spec(pinned)}).status_code == 201
    spec_id = RewardSpec.objects.get(name="mixed").pk
    rubrics = f"/api/v1/projects/{people.project.pk}/rubrics"

    refused = designer("delete", f"{rubrics}/{used.pk}")
    assert refused.status_code == 422
    assert refused.json()["detail"][0] == {"field": "rubric", "message": refused.json()["detail"][0]["message"]}
    assert "reward spec mixed v1" in refused.json()["detail"][0]["message"]
    assert designer("delete", f"{rubrics}/{spare.pk}").status_code == 204
    assert not Rubric.objects.filter(name="Spare").exists()

    version_id = RewardSpec.objects.get(pk=spec_id).versions.get().pk
    job = job_create(project=people.project, user=people.users["bob"], kind="grpo", argv=[],
                     spec={"reward_spec_version_id": version_id})
    refused = designer("delete", _url(people, f"/{spec_id}"))
    assert refused.status_code == 422 and f"#{job.pk}" in refused.json()["detail"][0]["message"]
    job.delete()
    assert designer("delete", _url(people, f"/{spec_id}")).status_code == 204
    assert designer("delete", f"{rubrics}/{used.pk}").status_code == 204  # nothing uses it now
    assert not Rubric.objects.exists() and not RewardSpec.objects.exists()


@pytest.mark.parametrize("role,status", [("annotator", 403), ("viewer", 403), ("outsider", 404)])
def test_it_lets_only_designers_remove_rubrics_and_specs(designer, client, people, role, status):
    from webapp.rubrics.models import Rubric

    _save_rubric(designer, people, "Kept")
    designer("post", _url(people), {"name": "kept", "definition": _spec(PENALTY)})
    other = api_client(client, people.by_role[role])
    assert other("delete", f"/api/v1/projects/{people.project.pk}/rubrics/{Rubric.objects.get().pk}").status_code == status
    assert other("delete", _url(people, f"/{RewardSpec.objects.get().pk}")).status_code == status
    assert Rubric.objects.count() == 1 and RewardSpec.objects.count() == 1



def test_the_pages_remove_a_rubric_or_say_what_still_uses_it(designer, client, people):
    from tests.conftest import PASSWORD
    from webapp.rubrics.models import Rubric

    _save_rubric(designer, people, "Used")
    pinned = {"kind": "rubric_rules", "name": "helpful", "rubric_path": "rubric://Used@1"}
    designer("post", _url(people), {"name": "mixed", "definition": _spec(pinned)})
    rubric, spec = Rubric.objects.get(), RewardSpec.objects.get()
    client.login(username="bob", password=PASSWORD)
    base = f"/projects/{people.project.pk}"
    assert 'id="delete-rubric"' in client.get(f"{base}/rubrics/{rubric.pk}/").content.decode()
    refused = client.post(f"{base}/rubrics/{rubric.pk}/delete/", follow=True).content.decode()
    assert "reward spec mixed v1" in refused and Rubric.objects.exists()
    assert 'id="delete-spec"' in client.get(f"{base}/reward-specs/{spec.pk}/").content.decode()
    assert client.post(f"{base}/reward-specs/{spec.pk}/delete/").status_code == 302
    assert client.post(f"{base}/rubrics/{rubric.pk}/delete/").status_code == 302
    assert not Rubric.objects.exists() and not RewardSpec.objects.exists()


def test_it_previews_a_registered_reward_model_with_the_scores_a_worker_stored(designer, people, tmp_path):
    """The web process loads no model: the preview shows what 'Score responses with the registry' stored,
    and says what is missing until then."""
    from webapp.datasets.models import Response
    from webapp.jobs.models import Job
    from webapp.routing.models import ResponseRewardScore
    from webapp.training.models import RewardModel

    folder = tmp_path / "helpful-rm"
    folder.mkdir()
    for name in ("config.json", "model.safetensors", "tokenizer.json"):  # never loaded: the preview reads stored scores
        (folder / name).write_text("{}")
    job = Job.objects.create(project=people.project, kind="train_reward_model", created_by=people.users["alice"])
    model = RewardModel.objects.create(project=people.project, job=job, name="helpful-rm", path=str(folder),
                                       backbone="b", snapshot_path="/s.jsonl", spec={})
    rm = {"kind": "reward_model", "name": "rm", "path": model.path, "weight": 2.0}
    definition = {"definition": _spec(PENALTY, rm)}
    before = designer("post", _url(people, "/preview"), definition).json()
    assert before["skipped"] == ["rm"] and "not scored by helpful-rm yet" in before["skipped_reasons"]["rm"]

    responses = list(Response.objects.filter(prompt__dataset__project=people.project).order_by("id"))
    for i, response in enumerate(responses):
        ResponseRewardScore.objects.create(response=response, reward_model=model, score=0.25 * i)
    after = designer("post", _url(people, "/preview"), definition).json()
    assert after["skipped"] == [] and after["stored"] == ["rm"] and after["components"] == ["overlong", "rm"]
    by_id = {item["id"]: item for item in after["items"]}
    for i, response in enumerate(responses):
        item = by_id[response.pk]
        assert item["components"]["rm"] == 0.25 * i
        # normalisation "none": total = 0.5 * length penalty + 2.0 * rm score
        assert item["total"] == pytest.approx(0.5 * item["components"]["overlong"] + 2.0 * 0.25 * i)
    # the computed part alone has zero weight: the spec was checked whole, its part is not a spec to refuse
    muted = designer("post", _url(people, "/preview"), {"definition": _spec({**PENALTY, "weight": 0}, rm)})
    assert muted.status_code == 200, muted.content
    assert sorted(item["total"] for item in muted.json()["items"]) == pytest.approx(
        [2.0 * 0.25 * i for i in range(len(responses))])
