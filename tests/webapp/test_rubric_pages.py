"""The rubric editor and reward spec composer pages: htmx validation, live preview, saving versions, diffs."""

import pytest

from tests.webapp.rubric_helpers import add_dataset, api_client, rubric_definition
from webapp.rubrics.models import RewardSpec, Rubric, RubricVersion

pytestmark = pytest.mark.django_db


def _form(**overrides):
    data = {
        "name": "Helpful", "aggregation": "weighted_mean", "saturation": "3", "description": "",
        "criteria[0].name": "polite", "criteria[0].weight": "1", "criteria[0].veto_cap": "0",
        "criteria[0].pass_threshold": "0.5", "criteria[0].rule.kind": "contains",
        "criteria[0].rule.texts": "please\nthank", "criteria[0].rule.mode": "any",
        "criteria[1].name": "greets", "criteria[1].weight": "2", "criteria[1].veto_cap": "0",
        "criteria[1].pass_threshold": "0.5", "criteria[1].rule.kind": "regex",
        "criteria[1].rule.pattern": "(?i)^(hi|hello)", "criteria[1].rule.must_match": "on",
    }
    data.update(overrides)
    return data


def _login(client, people, who="bob"):
    client.force_login(people.users[who])
    return f"/projects/{people.project.pk}/rubrics"


def test_it_shows_an_invalid_regex_inline_under_its_criterion_while_typing(client, people):
    base = _login(client, people)
    response = client.post(f"{base}/check/", _form(**{"criteria[1].rule.pattern": "(hi"}), HTTP_HX_REQUEST="true")
    html = response.content.decode()
    assert response.status_code == 200
    errors_1 = html[html.index('id="criterion-errors-1"'):]
    errors_1 = errors_1[:errors_1.index("</ul>")]
    assert "rule.pattern" in errors_1 and "criterion &#x27;greets&#x27;" in errors_1 and "missing )" in errors_1
    assert 'hx-swap-oob="true"' in errors_1
    assert "1 problem" in html and "preview-table" not in html


def test_it_shows_a_weight_that_is_not_a_number_and_an_unparseable_schema(client, people):
    base = _login(client, people)
    form = _form(**{"criteria[0].weight": "lots", "criteria[1].rule.kind": "json", "criteria[1].rule.schema": "{type:"})
    html = client.post(f"{base}/check/", form).content.decode()
    assert "criterion &#x27;polite&#x27;: &#x27;lots&#x27; is not a number" in html
    assert "the JSON Schema is not valid JSON (line 1" in html


def test_it_previews_the_projects_responses_as_the_rubric_changes(client, people):
    add_dataset(people.project, people.users["alice"])
    base = _login(client, people)
    html = client.post(f"{base}/check/", _form()).content.decode()
    assert "preview-table" in html and "4 responses from this project" in html
    thank_row = html[html.index("Thank you for asking"):]
    assert '<td class="total">0.333' in thank_row[:600]  # polite (1) of weight 3
    changed = client.post(f"{base}/check/", _form(**{"criteria[1].weight": "0"})).content.decode()
    thank_row = changed[changed.index("Thank you for asking"):]
    assert '<td class="total">1.000' in thank_row[:600]


def test_it_adds_moves_and_removes_criteria(client, people):
    base = _login(client, people)
    added = client.post(f"{base}/rows/", {**_form(), "action": "add"}).content.decode()
    assert 'name="criteria[2].name" value="criterion_3"' in added
    moved = client.post(f"{base}/rows/", {**_form(), "action": "up:1"}).content.decode()
    assert moved.index('value="greets"') < moved.index('value="polite"')
    removed = client.post(f"{base}/rows/", {**_form(), "action": "remove:0"}).content.decode()
    assert 'value="polite"' not in removed and 'name="criteria[0].name" value="greets"' in removed
    kind = client.post(f"{base}/rows/", {**_form(**{"criteria[1].rule.kind": "length"}), "action": "kind"})
    assert 'name="criteria[1].rule.max"' in kind.content.decode()


def test_it_saves_a_rubric_then_a_new_version_and_diffs_them(client, people):
    base = _login(client, people)
    response = client.post(f"{base}/new/", _form(note="first"))
    rubric = Rubric.objects.get()
    assert response.status_code == 302 and response["Location"] == f"{base}/{rubric.pk}/"
    edit = client.get(f"{base}/{rubric.pk}/edit/").content.decode()
    assert 'value="(?i)^(hi|hello)"' in edit
    client.post(f"{base}/{rubric.pk}/edit/", _form(**{"criteria[1].weight": "4"}, note="greeting matters more"))
    assert list(rubric.versions.values_list("number", flat=True)) == [2, 1]
    assert RubricVersion.objects.get(number=1).definition["criteria"][1]["weight"] == 2.0
    diff = client.get(f"{base}/{rubric.pk}/diff/?a=1&b=2").content.decode()
    assert "greets" in diff and "2.0" in diff and "4.0" in diff and "changed" in diff
    detail = client.get(f"{base}/{rubric.pk}/").content.decode()
    assert "greeting matters more" in detail
    assert client.get(f"{base}/{rubric.pk}/diff/?a=1&b=7").status_code == 404


def test_it_keeps_the_form_and_says_why_when_saving_a_bad_rubric(client, people):
    base = _login(client, people)
    response = client.post(f"{base}/new/", _form(**{"criteria[1].rule.pattern": "(?<=x)y"}))
    assert response.status_code == 422
    html = response.content.decode()
    assert 'value="(?&lt;=x)y"' in html and "look-arounds" in html
    assert not Rubric.objects.exists()


def test_it_lets_only_designers_edit_and_hides_it_from_outsiders(client, people):
    api_client(client, people.users["bob"])("post", f"/api/v1/projects/{people.project.pk}/rubrics",
                                             {"name": "Helpful", "definition": rubric_definition()})
    rubric = Rubric.objects.get()
    for who, page, edit in (("dave", 200, 403), ("carol", 200, 403), ("eve", 404, 404)):
        base = _login(client, people, who)
        assert client.get(f"{base}/{rubric.pk}/").status_code == page
        assert client.get(f"{base}/").status_code == page
        assert client.get(f"{base}/{rubric.pk}/edit/").status_code == edit
        assert client.post(f"{base}/check/", _form()).status_code == edit
        assert client.post(f"{base}/{rubric.pk}/edit/", _form()).status_code == edit
    assert RubricVersion.objects.count() == 1


def test_it_composes_a_reward_spec_from_a_saved_rubric_and_exports_it(client, people):
    add_dataset(people.project, people.users["alice"])
    api_client(client, people.users["bob"])("post", f"/api/v1/projects/{people.project.pk}/rubrics",
                                             {"name": "Helpful", "definition": rubric_definition()})
    client.force_login(people.users["bob"])
    base = f"/projects/{people.project.pk}/reward-specs"
    assert "rubric://Helpful" in client.get(f"{base}/new/").content.decode()
    text = ("name: mixed\ncomponents:\n  - kind: rubric_rules\n    name: helpful\n    rubric_path: rubric://Helpful@1\n"
            "  - kind: verifier\n    name: correct\n    reference_column: answer\n    when: {column: task, equals: math}\n")
    check = client.post(f"{base}/check/", {"yaml": text}).content.decode()
    assert "valid" in check and "<th>helpful</th>" in check
    bad = client.post(f"{base}/check/", {"yaml": text.replace("answer\n", "gold\n")}).content.decode()
    assert "line 8" in bad and "column &#x27;gold&#x27; is not in the dataset" in bad
    response = client.post(f"{base}/new/", {"yaml": text, "note": "v1"})
    spec = RewardSpec.objects.get()
    assert response.status_code == 302
    version = spec.versions.get()
    assert version.definition["components"][0]["rubric"]["criteria"][0]["name"] == "polite"
    assert [str(v) for v in version.rubric_versions.all()] == ["Helpful v1"]
    exported = client.get(f"{base}/{spec.pk}/v/1/yaml").content.decode()
    assert "kind: verifier" in exported and "rubric_path: null" in exported
    assert "Helpful v1" in client.get(f"{base}/{spec.pk}/").content.decode()
    editing = client.get(f"{base}/{spec.pk}/edit/").content.decode()
    assert "rubric_path: rubric://Helpful@1" in editing and "when: null" not in editing
    client.post(f"{base}/{spec.pk}/edit/", {"yaml": text.replace("weight: 1.0", "").replace("Helpful@1", "Helpful"),
                                            "note": "same"})
    assert spec.versions.count() == 2


def test_it_adds_components_to_the_composed_yaml(client, people):
    api_client(client, people.users["bob"])("post", f"/api/v1/projects/{people.project.pk}/rubrics",
                                             {"name": "Helpful", "definition": rubric_definition()})
    client.force_login(people.users["bob"])
    base = f"/projects/{people.project.pk}/reward-specs"
    page = client.get(f"{base}/new/").content.decode()
    assert '<option value="Helpful@1">Helpful v1</option>' in page
    text = "name: s\ncomponents:\n- kind: length_penalty\n  name: overlong\n  max_length: 10\n  cache_length: 2\n"
    html = client.post(f"{base}/add-component/", {"yaml": text, "add_kind": "rubric_rules", "add_rubric": "Helpful@1",
                                                  "add_weight": "2"}).content.decode()
    assert "name: rubric_rules\n  rubric_path: rubric://Helpful@1\n  weight: 2.0" in html
    assert 'id="spec-check"' in html and 'hx-swap-oob="true"' in html and "valid" in html
    again = client.post(f"{base}/add-component/", {"yaml": html[html.index("name: s"):html.index("</textarea>")],
                                                   "add_kind": "rubric_rules", "add_rubric": "Helpful@1"})
    assert "name: rubric_rules_2" in again.content.decode()
    rm = client.post(f"{base}/add-component/", {"yaml": text, "add_kind": "reward_model", "add_path": "/nope"})
    assert "path: /nope" in rm.content.decode() and "/nope does not exist" in rm.content.decode()
    broken = client.post(f"{base}/add-component/", {"yaml": "name: [", "add_kind": "verifier"}).content.decode()
    assert "name: [" in broken and "not valid YAML" in broken


def test_it_opens_a_new_rubric_without_errors_before_anything_is_typed(client, people):
    base = _login(client, people)
    page = client.get(base + "/new/").content.decode()
    assert "Field required" not in page
    assert 'id="check-state" class="state ">incomplete' in page
    assert "Fill in criterion_1's pattern to see the preview." in page
    # adding a criterion does not flag the new, empty one either
    added = client.post(f"/projects/{people.project.pk}/rubrics/rows/",
                        {**_form(), "action": "add"}).content.decode()
    assert "Field required" not in added


def test_it_still_refuses_to_save_a_rule_left_empty(client, people):
    base = _login(client, people)
    response = client.post(base + "/new/", _form(**{"criteria[1].rule.pattern": ""}))
    assert response.status_code == 422
    assert "rule.pattern" in response.content.decode() and not Rubric.objects.exists()


def test_it_offers_exactly_rlcores_rule_kinds_and_format_checks(client, people):
    """The menus come from rlcore's Literals: a value added there shows in the editor unedited."""
    import re
    from typing import get_args

    from rlcore.rubric import Rubric
    from rlcore.rules import ContainsRule, FormatCheck, Rule

    kinds = [get_args(m.model_fields["kind"].annotation)[0] for m in get_args(get_args(Rule)[0])]
    base = _login(client, people)
    html = client.post(f"{base}/rows/", _form(**{"criteria[1].rule.kind": "format", "action": "kind"}),
                       HTTP_HX_REQUEST="true").content.decode()

    def options(name):
        select = html[html.index(f'name="{name}"'):]
        return re.findall(r'<option value="([^"]*)"', select[:select.index("</select>")])

    assert options("criteria[0].rule.kind") == ["", *kinds]
    assert options("criteria[1].rule.check") == list(get_args(FormatCheck))
    assert options("criteria[0].rule.mode") == list(get_args(ContainsRule.model_fields["mode"].annotation))
    page = client.get(f"{base}/new/").content.decode()
    select = page[page.index('name="aggregation"'):]
    assert re.findall(r'<option value="([^"]*)"', select[:select.index("</select>")]) == \
        list(get_args(Rubric.model_fields["aggregation"].annotation))


def test_it_saves_an_uploaded_spec_file_as_the_import_api_does_with_the_same_line_numbered_errors(client, people):
    from django.core.files.uploadedfile import SimpleUploadedFile

    add_dataset(people.project, people.users["alice"])
    bad = "name: graded\ncomponents:\n  - kind: verifier\n    name: correct\n    reference_column: gold\n"
    api = api_client(client, people.users["bob"])("post", f"/api/v1/projects/{people.project.pk}/reward-specs/import",
                                                   {"yaml": bad})
    assert api.status_code == 422
    [message] = [e["message"] for e in api.json()["detail"]]
    assert message.startswith("YAML, line 5: ")
    client.force_login(people.users["bob"])
    page = client.post(f"/projects/{people.project.pk}/reward-specs/new/",
                       {"yaml": "", "file": SimpleUploadedFile("spec.yaml", bad.encode())})
    assert page.status_code == 422 and message.replace("'", "&#x27;") in page.content.decode()
    saved = client.post(f"/projects/{people.project.pk}/reward-specs/new/",
                        {"yaml": "", "file": SimpleUploadedFile("spec.yaml", bad.replace("gold", "answer").encode())})
    assert saved.status_code == 302 and RewardSpec.objects.get().name == "graded"
