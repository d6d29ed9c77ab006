"""The permission matrix: each role against each page and API endpoint.

Expected outcome per role: "ok" (the 2xx/3xx the endpoint gives), 403, or 404. Outsiders always
get 404: we never confirm that another project exists.
"""

import pytest

from tests.conftest import token_for
from webapp.jobs.models import Job

OK, FORBIDDEN, NOT_FOUND = "ok", 403, 404
ALL = {"owner": OK, "designer": OK, "annotator": OK, "viewer": OK, "outsider": NOT_FOUND}
DASHBOARDS = {**ALL, "annotator": FORBIDDEN}
DESIGN = {**ALL, "annotator": FORBIDDEN, "viewer": FORBIDDEN}
OWNER_ONLY = {**ALL, "designer": FORBIDDEN, "annotator": FORBIDDEN, "viewer": FORBIDDEN}

PAGES = [
    ("get", "/projects/{p}/", None, ALL),
    ("get", "/projects/{p}/members/", None, OWNER_ONLY),
    ("get", "/projects/{p}/settings/", None, OWNER_ONLY),
    ("post", "/projects/{p}/settings/", {"name": "Helpfulness", "guidelines": "Be kind."}, OWNER_ONLY),
    ("post", "/projects/{p}/members/", {"user": "eve", "role": "viewer"}, OWNER_ONLY),
    ("post", "/projects/{p}/members/{dave}/", {"role": "annotator"}, OWNER_ONLY),
    ("get", "/projects/{p}/jobs/", None, DASHBOARDS),
    ("post", "/projects/{p}/jobs/", {"steps": 2, "interval": 0, "queue": "default"}, DESIGN),
    ("get", "/projects/{p}/jobs/{j}/", None, DASHBOARDS),
    ("post", "/projects/{p}/jobs/{j}/cancel/", {}, DESIGN),
]

API = [
    ("get", "/api/v1/projects/{p}", None, ALL),
    ("patch", "/api/v1/projects/{p}", {"description": "new"}, OWNER_ONLY),
    ("get", "/api/v1/projects/{p}/members", None, ALL),
    ("post", "/api/v1/projects/{p}/members", {"user": "eve", "role": "viewer"}, OWNER_ONLY),
    ("patch", "/api/v1/projects/{p}/members/{dave}", {"role": "annotator"}, OWNER_ONLY),
    ("delete", "/api/v1/projects/{p}/members/{dave}", None, OWNER_ONLY),
    ("get", "/api/v1/projects/{p}/jobs", None, DASHBOARDS),
    ("post", "/api/v1/projects/{p}/jobs/selfcheck", {"steps": 2, "interval": 0}, DESIGN),
    ("get", "/api/v1/projects/{p}/jobs/{j}", None, DASHBOARDS),
    ("post", "/api/v1/projects/{p}/jobs/{j}/cancel", None, DESIGN),
    ("get", "/api/v1/projects/{p}/jobs/{j}/metrics", None, DASHBOARDS),
]

ROLES = ["owner", "designer", "annotator", "viewer", "outsider"]


def _url(template, people, job):
    return template.format(p=people.project.pk, j=job.pk, dave=people.users["dave"].pk)


def _job(people):
    return Job.objects.create(project=people.project, kind="selfcheck", argv=["selfcheck"],
                              created_by=people.users["alice"])


def _assert_outcome(status, expected, where):
    if expected == OK:
        assert 200 <= status < 400, f"{where}: expected success, got {status}"
    else:
        assert status == expected, f"{where}: expected {expected}, got {status}"


@pytest.mark.django_db
@pytest.mark.parametrize("method,template,data,expected", PAGES, ids=[f"{m} {t}" for m, t, _, _ in PAGES])
@pytest.mark.parametrize("role", ROLES)
def test_it_applies_the_role_matrix_to_pages(client, people, role, method, template, data, expected):
    job = _job(people)
    client.force_login(people.by_role[role])
    response = getattr(client, method)(_url(template, people, job), data or {})
    _assert_outcome(response.status_code, expected[role], f"{role} {method} {template}")


@pytest.mark.django_db
@pytest.mark.parametrize("method,template,data,expected", API, ids=[f"{m} {t}" for m, t, _, _ in API])
@pytest.mark.parametrize("role", ROLES)
def test_it_applies_the_role_matrix_to_the_api(client, people, role, method, template, data, expected):
    job = _job(people)
    headers = {"Authorization": f"Bearer {token_for(people.by_role[role])}"}
    kwargs = {"data": data, "content_type": "application/json"} if data is not None else {}
    response = getattr(client, method)(_url(template, people, job), headers=headers, **kwargs)
    _assert_outcome(response.status_code, expected[role], f"{role} {method} {template}")
    assert response["Content-Type"].startswith("application/json") or response.status_code == 204


@pytest.mark.django_db
def test_it_hides_another_projects_job_behind_a_project_you_belong_to(client, people):
    foreign_job = Job.objects.create(project=people.other_project, kind="selfcheck", created_by=people.users["eve"])
    client.force_login(people.users["alice"])
    assert client.get(f"/projects/{people.project.pk}/jobs/{foreign_job.pk}/").status_code == 404
    headers = {"Authorization": f"Bearer {token_for(people.users['alice'])}"}
    assert client.get(f"/api/v1/projects/{people.project.pk}/jobs/{foreign_job.pk}", headers=headers).status_code == 404


@pytest.mark.django_db
def test_it_lists_only_your_projects(client, people):
    headers = {"Authorization": f"Bearer {token_for(people.users['carol'])}"}
    names = [p["name"] for p in client.get("/api/v1/projects", headers=headers).json()]
    assert names == ["Helpfulness"]
    client.force_login(people.users["carol"])
    page = client.get("/").content.decode()
    assert "Helpfulness" in page and "secret" not in page


@pytest.mark.django_db
def test_it_sends_anonymous_visitors_to_sign_in(client, people):
    response = client.get(f"/projects/{people.project.pk}/")
    assert response.status_code == 302 and response["Location"].startswith("/accounts/login/")
