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


@pytest.mark.django_db
def test_it_counts_every_member_in_the_project_list(client, people):
    client.force_login(people.users["dave"])
    page = client.get("/").content.decode()
    row = page[page.index("Helpfulness"):].split("</tr>")[0]
    # alice, bob, carol and dave: the count is not taken over the join filtered to the viewer.
    assert "<td>4</td>" in row, row


@pytest.mark.django_db
def test_it_refuses_a_role_inside_the_layout_and_names_the_roles_needed(client, people):
    client.force_login(people.users["dave"])
    response = client.get(f"/projects/{people.project.pk}/annotate/")
    assert response.status_code == 403
    page = response.content.decode()
    assert 'class="subnav"' in page and 'href="/projects/%d/"' % people.project.pk in page  # the layout's navigation
    assert "Annotating comparisons needs the owner, designer or annotator role" in page
    assert "your role in Helpfulness is viewer" in page


@pytest.mark.django_db
def test_it_keeps_json_403s_in_the_api_with_the_same_reason(client, people):
    headers = {"Authorization": f"Bearer {token_for(people.users['carol'])}"}
    response = client.get(f"/api/v1/projects/{people.project.pk}/jobs", headers=headers)
    assert response.status_code == 403 and response["Content-Type"].startswith("application/json")
    assert response.json()["detail"].startswith("Seeing jobs, metrics, agreement and exports needs the owner, designer or viewer role")


NAV_LINKS = {"Comparisons": "view_dashboards", "Annotate": "label", "Agreement": "view_dashboards",
             "Routing": "view_dashboards", "Judges": "view_dashboards", "Training": "view_dashboards",
             "Analysis": "view_dashboards", "Rounds": "view_dashboards", "Jobs": "view_dashboards",
             "Datasets": "view", "Rubrics": "view"}


@pytest.mark.django_db
@pytest.mark.parametrize("role", ["owner", "designer", "annotator", "viewer"])
def test_it_shows_only_the_project_links_a_role_can_use(client, people, role):
    import re

    from webapp.projects.permissions import Capability, role_allows

    client.force_login(people.by_role[role])
    page = client.get(f"/projects/{people.project.pk}/").content.decode()
    nav = re.search(r'<nav class="subnav">(.*?)</nav>', page, re.S).group(1)
    shown = set(re.findall(r'<a href="[^"]+">([^<]+)</a>', nav))
    assert shown == {name for name, cap in NAV_LINKS.items() if role_allows(role, Capability(cap))}, shown
    # and every link shown opens for this role
    for href in re.findall(r'href="([^"]+)"', nav):
        assert client.get(href).status_code == 200, href


@pytest.mark.django_db
def test_it_logs_a_refusal_in_one_line_without_a_traceback(client, people, caplog):
    client.force_login(people.users["dave"])
    with caplog.at_level("WARNING", logger="django.request"):
        assert client.get(f"/projects/{people.project.pk}/annotate/").status_code == 403
    refusals = [r for r in caplog.records if r.name == "django.request"]
    assert refusals and "Forbidden" in refusals[0].getMessage()
    assert all(r.exc_info is None for r in refusals)
