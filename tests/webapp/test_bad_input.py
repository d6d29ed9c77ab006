"""Bad input gets a clear message naming the field, on the page or as a 4xx JSON error."""

import pytest

from tests.conftest import PASSWORD, token_for
from webapp.projects.models import Membership, Project


def _api(client, user):
    headers = {"Authorization": f"Bearer {token_for(user)}"}

    def call(method, url, data=None):
        kwargs = {"data": data, "content_type": "application/json"} if data is not None else {}
        return getattr(client, method)(url, headers=headers, **kwargs)

    return call


@pytest.mark.django_db
def test_it_rejects_a_wrong_password_with_a_message(client, people):
    response = client.post("/accounts/login/", {"username": "alice", "password": "nope"})
    assert response.status_code == 200
    assert "Please enter a correct username and password" in response.content.decode()
    assert "_auth_user_id" not in client.session


@pytest.mark.django_db
def test_it_signs_in_and_out(client, people):
    response = client.post("/accounts/login/", {"username": "alice", "password": PASSWORD})
    assert response.status_code == 302 and "_auth_user_id" in client.session
    client.post("/accounts/logout/")
    assert "_auth_user_id" not in client.session


@pytest.mark.django_db
@pytest.mark.parametrize("header", [None, "Bearer rs_not-a-real-token", "Bearer ", "Token abc"])
def test_it_answers_401_json_for_a_missing_or_invalid_token(client, people, header):
    headers = {"Authorization": header} if header is not None else {}
    response = client.get("/api/v1/projects", headers=headers)
    assert response.status_code == 401
    assert "API token" in response.json()["detail"]


@pytest.mark.django_db
def test_it_exchanges_a_password_for_a_token_and_refuses_a_wrong_one(client, people):
    ok = client.post("/api/v1/auth/token", {"username": "bob", "password": PASSWORD}, content_type="application/json")
    assert ok.status_code == 200
    token = ok.json()["token"]
    assert client.get("/api/v1/projects", headers={"Authorization": f"Bearer {token}"}).status_code == 200
    bad = client.post("/api/v1/auth/token", {"username": "bob", "password": "x"}, content_type="application/json")
    assert bad.status_code == 401 and "Wrong username or password" in bad.json()["detail"]


@pytest.mark.django_db
def test_it_rejects_a_duplicate_project_name_case_insensitively(client, people):
    api = _api(client, people.users["bob"])
    response = api("post", "/api/v1/projects", {"name": "  helpfulness "})
    assert response.status_code == 422
    assert response.json()["detail"] == [{"field": "name", "message": "A project named 'helpfulness' already exists."}]
    assert Project.objects.filter(name__iexact="helpfulness").count() == 1


@pytest.mark.django_db
def test_it_shows_a_duplicate_name_error_on_the_page(client, people):
    client.force_login(people.users["bob"])
    response = client.post("/", {"name": "Helpfulness"})
    assert response.status_code == 422
    assert "already exists" in response.content.decode()


@pytest.mark.django_db
def test_it_rejects_an_empty_project_name(client, people):
    response = _api(client, people.users["bob"])("post", "/api/v1/projects", {"name": "   "})
    assert response.status_code == 422 and response.json()["detail"][0]["field"] == "name"


@pytest.mark.django_db
def test_it_rejects_an_invalid_role(client, people):
    api = _api(client, people.users["alice"])
    response = api("post", f"/api/v1/projects/{people.project.pk}/members", {"user": "eve", "role": "admin"})
    assert response.status_code == 422
    detail = response.json()["detail"][0]
    assert detail["field"] == "role" and "admin" in detail["message"] and "annotator" in detail["message"]
    assert not Membership.objects.filter(project=people.project, user=people.users["eve"]).exists()


@pytest.mark.django_db
def test_it_rejects_an_unknown_member(client, people):
    api = _api(client, people.users["alice"])
    response = api("post", f"/api/v1/projects/{people.project.pk}/members", {"user": "mallory", "role": "viewer"})
    assert response.status_code == 422
    assert response.json()["detail"][0] == {
        "field": "user", "message": "No user 'mallory'. Ask them to sign up first, then invite them."}


@pytest.mark.django_db
def test_it_shows_an_unknown_member_error_on_the_page(client, people):
    client.force_login(people.users["alice"])
    response = client.post(f"/projects/{people.project.pk}/members/", {"user": "mallory", "role": "viewer"})
    assert response.status_code == 422 and "No user &#x27;mallory&#x27;" in response.content.decode()


@pytest.mark.django_db
def test_it_rejects_a_second_membership(client, people):
    api = _api(client, people.users["alice"])
    response = api("post", f"/api/v1/projects/{people.project.pk}/members", {"user": "bob", "role": "viewer"})
    assert response.status_code == 422 and "already a member" in response.json()["detail"][0]["message"]
    assert Membership.objects.get(project=people.project, user=people.users["bob"]).role == "designer"


@pytest.mark.django_db
def test_it_keeps_at_least_one_owner(client, people):
    api = _api(client, people.users["alice"])
    alice_id = people.users["alice"].pk
    response = api("patch", f"/api/v1/projects/{people.project.pk}/members/{alice_id}", {"role": "viewer"})
    assert response.status_code == 422 and "at least one owner" in response.json()["detail"][0]["message"]
    assert api("delete", f"/api/v1/projects/{people.project.pk}/members/{alice_id}").status_code == 422
    assert Membership.objects.get(project=people.project, user_id=alice_id).role == "owner"


@pytest.mark.django_db
def test_it_names_the_field_of_a_malformed_body(client, people):
    api = _api(client, people.users["alice"])
    response = api("post", f"/api/v1/projects/{people.project.pk}/jobs/selfcheck", {"steps": "many"})
    assert response.status_code == 422
    assert "steps" in str(response.json()["detail"])


@pytest.mark.django_db
def test_it_serves_the_openapi_schema(client):
    schema = client.get("/api/v1/openapi.json").json()
    assert schema["info"]["title"] == "Reward Studio API"
    assert "/api/v1/projects/{project_id}/members" in schema["paths"]
    assert "/api/v1/projects/{project_id}/jobs/{job_id}/cancel" in schema["paths"]


@pytest.mark.django_db
def test_it_records_when_a_token_was_last_used_at_most_once_a_minute(client, people):
    from datetime import timedelta

    from django.utils import timezone

    from webapp.accounts.models import ApiToken

    headers = {"Authorization": f"Bearer {token_for(people.users['bob'])}"}
    client.get("/api/v1/projects", headers=headers)
    token = ApiToken.objects.get(user=people.users["bob"])
    first = token.last_used_at
    assert first is not None
    client.get("/api/v1/projects", headers=headers)
    assert ApiToken.objects.get(pk=token.pk).last_used_at == first
    ApiToken.objects.filter(pk=token.pk).update(last_used_at=first - timedelta(minutes=2))
    client.get("/api/v1/projects", headers=headers)
    assert ApiToken.objects.get(pk=token.pk).last_used_at > timezone.now() - timedelta(seconds=30)


@pytest.mark.django_db
def test_it_refuses_a_revoked_token_at_once(client, people):
    from webapp.accounts.models import ApiToken
    from webapp.accounts.services import api_token_revoke

    headers = {"Authorization": f"Bearer {token_for(people.users['bob'])}"}
    assert client.get("/api/v1/projects", headers=headers).status_code == 200
    assert api_token_revoke(user=people.users["bob"], token_id=ApiToken.objects.get(user=people.users["bob"]).pk)
    assert client.get("/api/v1/projects", headers=headers).status_code == 401


@pytest.mark.django_db
def test_it_saves_project_settings_and_closes_the_project(client, people):
    client.force_login(people.users["alice"])
    url = f"/projects/{people.project.pk}/settings/"
    taken = client.post(url, {"name": "eve's secret project", "guidelines": "x"})
    assert taken.status_code == 422 and "already exists" in taken.content.decode()
    saved = client.post(url, {"name": "Helpfulness v2", "guidelines": "Prefer correct answers.", "is_closed": "on"})
    assert saved.status_code == 302
    people.project.refresh_from_db()
    assert (people.project.name, people.project.guidelines, people.project.is_closed) == (
        "Helpfulness v2", "Prefer correct answers.", True)
    assert "closed: no new labels" in client.get(f"/projects/{people.project.pk}/").content.decode()


def _import_rows(client, user, project, rows, **fields):
    import json

    from django.core.files.uploadedfile import SimpleUploadedFile

    content = "".join(r if isinstance(r, str) else json.dumps(r) + "\n" for r in rows).encode()
    return client.post(f"/api/v1/projects/{project.pk}/datasets",
                       {"file": SimpleUploadedFile("d.jsonl", content), **fields},
                       headers={"Authorization": f"Bearer {token_for(user)}"})


@pytest.mark.django_db
def test_it_caps_all_pairs_of_a_row_with_many_responses_naming_the_count_and_the_cap(client, people):
    import time

    from webapp.annotation.models import Comparison

    imported = _import_rows(client, people.users["alice"], people.project,
                            [{"prompt": "p", "responses": [f"answer {i}" for i in range(600)]}])
    assert imported.status_code == 201, imported.content
    api = _api(client, people.users["bob"])
    url = f"/api/v1/projects/{people.project.pk}/comparisons/build"
    start = time.perf_counter()
    response = api("post", url, {"dataset_id": imported.json()["id"], "strategy": "all_pairs"})
    assert time.perf_counter() - start < 2  # it took 10 s to build all 179,700 inside the request
    assert response.status_code == 422
    detail = response.json()["detail"][0]
    assert detail["field"] == "strategy" and "179,700 comparisons" in detail["message"] and "50,000" in detail["message"]
    assert Comparison.objects.count() == 0
    sampled = api("post", url, {"dataset_id": imported.json()["id"], "strategy": "sampled_pairs",
                                "pairs_per_prompt": 5, "seed": 3})
    assert sampled.status_code == 201 and sampled.json() == {"created": 5}
    ids = [tuple(c.response_ids) for c in Comparison.objects.all()]
    assert len(set(ids)) == 5 and all(a != b for a, b in ids)


@pytest.mark.django_db
def test_it_previews_a_json_schema_rule_with_a_catastrophic_pattern_promptly(client, people):
    import time

    api = _api(client, people.users["bob"])
    rule = {"kind": "json", "schema": {"type": "string", "pattern": "^(a+)+$"}}
    definition = {"name": "r", "criteria": [{"name": "shape", "rule": rule}]}
    start = time.perf_counter()
    response = api("post", f"/api/v1/projects/{people.project.pk}/rubrics/preview",
                   {"definition": definition, "rows": [{"completion": '"' + "a" * 29 + '!"'}, {"completion": '"aa"'}]})
    assert time.perf_counter() - start < 2  # Python's re backtracked for minutes here
    assert response.status_code == 200, response.content
    assert [i["total"] for i in response.json()["items"]] == [0.0, 1.0]


@pytest.mark.django_db
def test_it_refuses_a_yaml_rubric_with_aliases_naming_the_line(client, people):
    from webapp.rubrics.models import Rubric

    from tests.rlcore.test_rubric import BILLION_LAUGHS

    response = _api(client, people.users["bob"])("post", f"/api/v1/projects/{people.project.pk}/rubrics/import",
                                                 {"yaml": BILLION_LAUGHS})
    assert response.status_code == 422
    detail = response.json()["detail"][0]
    assert detail["field"] == "yaml" and "line 3" in detail["message"] and "aliases (*a)" in detail["message"]
    assert not Rubric.objects.filter(name="lol").exists()


@pytest.mark.django_db
@pytest.mark.parametrize("method, url, body, field", [
    ("post", "/api/v1/projects", {"name": "nul\u0000name"}, "name"),
    ("post", "/api/v1/projects/{p}/judge-templates", {"name": "t", "text": "{prompt}\u0000"}, "text"),
    ("get", "/api/v1/projects/{p}/comparisons?dataset_id=1&x=%00", None, "x"),
    ("delete", "/api/v1/projects/{p}/judge-templates/a%00b", None, "path"),
])
def test_it_refuses_nul_characters_naming_the_field(client, people, method, url, body, field):
    response = _api(client, people.users["bob"])(method, url.format(p=people.project.pk), body)
    assert response.status_code == 422, response.content
    assert response.json()["detail"][0]["field"] == field
    assert "NUL" in response.json()["detail"][0]["message"]


@pytest.mark.django_db
@pytest.mark.parametrize("line, reason", [
    ('{"prompt": "p\\u0000", "responses": ["a", "b"]}\n', "field 'prompt' contains a NUL character"),
    ('{"prompt": "p", "responses": ["a", "b"], "meta": ' + "[" * 3000 + "]" * 3000 + "}\n", "nested more than 64"),
    ('{"prompt": "p", "responses": ["a", "b"], "meta": ' + "[" * 200 + "]" * 200 + "}\n", "nested more than 64"),
])
def test_it_refuses_an_unstorable_row_naming_the_line(client, people, line, reason):
    from webapp.datasets.models import Prompt

    response = _import_rows(client, people.users["alice"], people.project, ['{"prompt": "ok", "responses": ["a"]}\n', line])
    assert response.status_code == 422, response.content
    message = str(response.json()["detail"])
    assert "line 2" in message and reason in message
    assert not Prompt.objects.exists()


@pytest.mark.django_db
@pytest.mark.parametrize("url", ["/api/v1/projects/{p}/comparisons", "/api/v1/projects/{p}/datasets/1/rows"])
def test_it_refuses_a_huge_offset_naming_the_field(client, people, url):
    response = _api(client, people.users["bob"])("get", url.format(p=people.project.pk) + "?offset=" + "9" * 25)
    assert response.status_code == 422, response.content
    assert "offset" in str(response.json()["detail"])


@pytest.mark.django_db
def test_it_refuses_a_judge_api_key_with_non_ascii_characters(client, people):
    from webapp.judging.models import JudgeConfig

    api = _api(client, people.users["bob"])
    base = f"/api/v1/projects/{people.project.pk}/judges"
    response = api("post", base, {"name": "j", "endpoint": "http://127.0.0.1:9/v1", "model": "m", "api_key": "sk-ключ"})
    assert response.status_code == 422 and response.json()["detail"][0]["field"] == "api_key"
    created = api("post", base, {"name": "j", "endpoint": "http://127.0.0.1:9/v1", "model": "m"})
    assert created.status_code == 201
    patched = api("patch", f"{base}/{created.json()['id']}", {"api_key": "sk-\u2014dash"})
    assert patched.status_code == 422 and patched.json()["detail"][0]["field"] == "api_key"
    assert JudgeConfig.objects.get().api_key_encrypted == ""


@pytest.mark.django_db
def test_it_refuses_a_template_name_with_a_slash_and_removes_an_old_one(client, people):
    from webapp.judging.models import JudgePromptTemplate

    api = _api(client, people.users["bob"])
    base = f"/api/v1/projects/{people.project.pk}/judge-templates"
    text = "Compare.\n{prompt}\nA: {response_a}\nB: {response_b}\nVerdict: [[A]] or [[B]]"
    response = api("post", base, {"name": "a/b", "text": text})
    assert response.status_code == 422 and response.json()["detail"][0]["field"] == "name"
    # one saved before names were checked still shows on the Judges page and can be removed
    JudgePromptTemplate.objects.create(project=people.project, name="old/one", text=text, mode="compare", version=1,
                                       created_by=people.users["bob"])
    client.force_login(people.users["bob"])
    assert client.get(f"/projects/{people.project.pk}/judging/").status_code == 200
    assert api("delete", f"{base}/old/one").status_code == 204
    assert not JudgePromptTemplate.objects.exists()


@pytest.mark.django_db
def test_it_answers_every_api_error_as_json(client, people):
    api = _api(client, people.users["bob"])
    unknown = api("get", "/api/v1/no-such-endpoint")
    assert unknown.status_code == 404 and "detail" in unknown.json()
    wrong_method = api("put", "/api/v1/projects", {"name": "x"})
    assert wrong_method.status_code == 405 and "detail" in wrong_method.json()
    assert "GET" in wrong_method["Allow"]
    malformed = client.post("/api/v1/projects", "{not json", content_type="application/json",
                            headers={"Authorization": f"Bearer {token_for(people.users['bob'])}"})
    assert malformed.status_code == 400 and "detail" in malformed.json()


@pytest.mark.django_db
def test_it_documents_the_error_answers_of_each_operation(client):
    schema = client.get("/api/v1/openapi.json").json()
    build = schema["paths"]["/api/v1/projects/{project_id}/comparisons/build"]["post"]["responses"]
    assert {"201", "400", "401", "403", "404", "422"} <= set(build)
    assert "field" in str(build["422"]["content"]["application/json"]["schema"])
    assert all("422" in op["responses"] for ops in schema["paths"].values() for op in ops.values())


@pytest.mark.django_db
@pytest.mark.parametrize("method, url, body, field, words", [
    ("post", "/api/v1/projects/{p}/jobs/selfcheck", {"steps": "many"}, "steps", "integer"),
    ("get", "/api/v1/projects/{p}/rubrics/1/diff?a=1", None, "b", "required"),
    ("get", "/api/v1/projects/{p}/comparisons?limit=lots", None, "limit", "integer"),
])
def test_it_answers_request_validation_errors_in_the_promised_shape(client, people, method, url, body, field, words):
    # ninja's own validation (types, required fields) answers like the services: field and message only,
    # without pydantic's "type"/"loc"/"msg" or a "body"/"query" prefix
    response = _api(client, people.users["bob"])(method, url.format(p=people.project.pk), body)
    assert response.status_code == 422, response.content
    assert response.json() == {"detail": [{"field": field, "message": response.json()["detail"][0]["message"]}]}
    assert words in response.json()["detail"][0]["message"].lower()


def test_it_reads_the_request_caps_from_the_environment():
    import os
    import subprocess
    import sys

    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "webapp.settings", "COMPARISONS_BUILD_MAX": "7",
           "RUBRIC_PREVIEW_BUDGET_SECONDS": "0.5"}
    out = subprocess.run([sys.executable, "-c", "from django.conf import settings; "
                          "print(settings.COMPARISONS_BUILD_MAX, settings.RUBRIC_PREVIEW_BUDGET_SECONDS)"],
                         env=env, capture_output=True, text=True, check=True).stdout.split()
    assert out == ["7", "0.5"]


@pytest.mark.django_db
def test_a_page_form_with_a_nul_character_is_refused_in_the_layout_and_saves_nothing(client, people):
    """The rubric editor reads its criteria from raw POST fields, which no Django form field checks."""
    from webapp.rubrics.models import Rubric

    client.force_login(people.users["bob"])
    form = {"name": "Helpful", "aggregation": "weighted_mean", "saturation": "3", "description": "",
            "criteria[0].name": "pol\x00ite", "criteria[0].weight": "1", "criteria[0].veto_cap": "0",
            "criteria[0].pass_threshold": "0.5", "criteria[0].rule.kind": "contains",
            "criteria[0].rule.texts": "please", "criteria[0].rule.mode": "any"}
    response = client.post(f"/projects/{people.project.pk}/rubrics/new/", form)
    page = response.content.decode()
    assert response.status_code == 422
    assert "The field criteria[0].name contains a NUL character" in page and 'id="bad-input"' in page
    assert 'class="brand"' in page  # inside the app's layout
    assert not Rubric.objects.exists()
