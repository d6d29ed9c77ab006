"""Sign-in throttling, API token lifetime, the secret key, deployment headers, the judge key
allow-list, the queued-jobs cap and database connections under uvicorn."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from datetime import timedelta

import pytest
from django.test import Client
from django.utils import timezone

from tests.conftest import PASSWORD, ROOT, Processes, free_port, token_for, wait_for

pytestmark = pytest.mark.django_db


def _api_token(client, username, password, **extra):
    return client.post("/api/v1/auth/token", {"username": username, "password": password, **extra},
                       content_type="application/json")


# --- sign-in throttling ---------------------------------------------------------------------

def test_it_locks_a_username_out_of_the_login_form_after_the_failure_limit(client, people, settings):
    for _ in range(settings.AXES_FAILURE_LIMIT - 1):
        r = client.post("/accounts/login/", {"username": "bob", "password": "wrong"})
        assert r.status_code == 200 and "correct username and password" in r.content.decode()
    assert client.post("/accounts/login/", {"username": "bob", "password": "wrong"}).status_code == 429
    refused = client.post("/accounts/login/", {"username": "bob", "password": PASSWORD})
    assert refused.status_code == 429
    assert "Too many wrong passwords" in refused.content.decode() and int(refused["Retry-After"]) > 0
    assert "_auth_user_id" not in client.session  # even the right password does not get in now
    # Another user from the same address is not affected.
    assert client.post("/accounts/login/", {"username": "carol", "password": PASSWORD}).status_code == 302


def test_it_throttles_the_token_endpoint_with_a_json_429(client, people, settings):
    for _ in range(settings.AXES_FAILURE_LIMIT - 1):
        assert _api_token(client, "dave", "wrong").status_code == 401
    assert _api_token(client, "dave", "wrong").status_code == 429
    refused = _api_token(client, "dave", PASSWORD)
    assert refused.status_code == 429 and "Too many wrong passwords" in refused.json()["detail"]
    assert _api_token(client, "carol", PASSWORD).status_code == 200


def test_it_forgets_earlier_failures_after_a_successful_sign_in(client, people, settings):
    for _ in range(settings.AXES_FAILURE_LIMIT - 1):
        _api_token(client, "bob", "wrong")
    assert _api_token(client, "bob", PASSWORD).status_code == 200
    for _ in range(settings.AXES_FAILURE_LIMIT - 1):
        _api_token(client, "bob", "wrong")
    assert _api_token(client, "bob", PASSWORD).status_code == 200


# --- API tokens -----------------------------------------------------------------------------

def _projects(client, token):
    return client.get("/api/v1/projects", headers={"Authorization": f"Bearer {token}"})


def test_it_refuses_an_expired_token(client, people):
    from webapp.accounts.models import ApiToken

    r = _api_token(client, "bob", PASSWORD, name="short", expires_in_days=1)
    token = r.json()["token"]
    assert r.json()["expires_at"] is not None and _projects(client, token).status_code == 200
    ApiToken.objects.filter(user=people.users["bob"]).update(expires_at=timezone.now() - timedelta(seconds=1))
    assert _projects(client, token).status_code == 401


def test_it_rejects_an_expiry_out_of_range(client, people):
    r = _api_token(client, "bob", PASSWORD, expires_in_days=0)
    assert r.status_code == 422 and r.json()["detail"][0]["field"] == "expires_in_days"


def test_it_refuses_the_tokens_of_a_deactivated_user_at_once(client, people):
    token = token_for(people.users["bob"])
    assert _projects(client, token).status_code == 200
    people.users["bob"].is_active = False
    people.users["bob"].save()
    assert _projects(client, token).status_code == 401


def test_it_revokes_every_token_when_the_password_changes_on_the_account_page(client, people):
    token = token_for(people.users["bob"])
    client.force_login(people.users["bob"])
    r = client.post("/accounts/", {"action": "password", "old_password": PASSWORD,
                                   "new_password1": "a-new-long-password", "new_password2": "a-new-long-password"})
    assert r.status_code == 302
    assert _projects(Client(), token).status_code == 401  # a client without this browser's session
    assert client.get("/accounts/").status_code == 200  # this browser stays signed in


def test_it_revokes_tokens_when_the_password_is_set_from_code_but_not_on_sign_in(client, people):
    from webapp.accounts.models import ApiToken

    carol = people.users["carol"]
    token = token_for(carol)
    signed_in = client.post("/accounts/login/", {"username": "carol", "password": PASSWORD})  # saves last_login
    assert signed_in.status_code == 302
    assert ApiToken.objects.filter(user=carol).count() == 1 and _projects(client, token).status_code == 200
    carol.set_password("another-long-password")
    carol.save()
    assert not ApiToken.objects.filter(user=carol).exists()


@pytest.mark.django_db(transaction=True)
def test_it_refuses_a_token_revoked_in_another_process_on_the_next_request(app_server, people):
    from webapp.accounts.models import ApiToken
    from webapp.accounts.services import api_token_revoke

    token = token_for(people.users["bob"])

    def status():
        request = urllib.request.Request(app_server + "/api/v1/projects", headers={"Authorization": f"Bearer {token}"})
        try:
            return urllib.request.urlopen(request, timeout=10).status
        except urllib.error.HTTPError as exc:
            return exc.code

    assert status() == 200
    api_token_revoke(user=people.users["bob"], token_id=ApiToken.objects.get(user=people.users["bob"]).pk)
    assert status() == 401


# --- the secret key and deployment settings ---------------------------------------------------

def _django(env_changes: dict, code: str, tmp_path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("SECRET_KEY", "DATABASE_URL", "DEBUG", "HTTPS")}
    env.update({"REWARD_STUDIO_VAR": str(tmp_path), "DJANGO_SETTINGS_MODULE": "webapp.settings", **env_changes})
    return subprocess.run([sys.executable, "-c", f"import django; django.setup(); {code}"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120)


def test_it_refuses_to_start_a_deployment_without_a_secret_key(tmp_path):
    run = _django({"DATABASE_URL": "postgres://postgres@127.0.0.1:5432/x"}, "", tmp_path)
    assert run.returncode != 0 and "SECRET_KEY is not set" in run.stderr


def test_it_makes_and_keeps_a_private_secret_key_for_the_embedded_default(tmp_path):
    from django.conf import settings

    code = "from django.conf import settings; print(settings.SECRET_KEY)"
    first = _django({}, code, tmp_path)
    second = _django({}, code, tmp_path)
    assert first.returncode == 0, first.stderr
    key = first.stdout.strip()
    assert key == second.stdout.strip() and len(key) >= 50 and key != settings.SECRET_KEY
    assert (tmp_path / "secret_key").stat().st_mode & 0o777 == 0o600


def test_check_deploy_is_clean_with_the_documented_production_variables(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("DEBUG", "DJANGO_ALLOW_ASYNC_UNSAFE")}
    env.update({"SECRET_KEY": "p" * 20 + "-production-key-with-enough-entropy-" + os.urandom(16).hex(),
                "HTTPS": "1", "ALLOWED_HOSTS": "studio.example.org", "REWARD_STUDIO_VAR": str(tmp_path)})
    run = subprocess.run([sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"], cwd=ROOT,
                         env=env, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "no issues" in run.stdout


def test_it_sends_a_content_security_policy_that_allows_no_inline_script(client, people):
    client.force_login(people.users["bob"])
    policy = client.get("/").headers["Content-Security-Policy"]
    assert "script-src 'self'" in policy and "unsafe-inline" not in policy.split("script-src")[1].split(";")[0]


# --- judge keys from the environment ----------------------------------------------------------

def test_it_refuses_a_judge_key_variable_the_operator_did_not_allow(client, people, settings):
    settings.JUDGE_KEY_ENV_ALLOWLIST = ["OPENAI_API_KEY"]
    headers = {"Authorization": f"Bearer {token_for(people.users['bob'])}"}
    base = f"/api/v1/projects/{people.project.pk}/judges"
    body = {"name": "j", "endpoint": "http://127.0.0.1:9/v1", "model": "m", "api_key_env": "DATABASE_URL"}
    r = client.post(base, body, content_type="application/json", headers=headers)
    assert r.status_code == 422
    error = r.json()["detail"][0]
    assert error["field"] == "api_key_env" and "OPENAI_API_KEY" in error["message"]
    ok = client.post(base, {**body, "api_key_env": "OPENAI_API_KEY"}, content_type="application/json",
                     headers=headers)
    assert ok.status_code in (200, 201), ok.content


def test_it_refuses_a_stored_judge_whose_key_variable_is_no_longer_allowed(people, settings):
    from django.core.exceptions import ValidationError

    from webapp.judging.models import JudgeConfig
    from webapp.judging.configs import backend_arguments

    config = JudgeConfig.objects.create(project=people.project, name="old", endpoint="http://127.0.0.1:9/v1",
                                        model="m", api_key_env="SECRET_KEY", created_by=people.users["bob"])
    settings.JUDGE_KEY_ENV_ALLOWLIST = []
    with pytest.raises(ValidationError) as caught:
        backend_arguments(config)
    assert "SECRET_KEY is not a judge key variable" in str(caught.value)


# --- queued jobs per user -----------------------------------------------------------------------

def test_it_caps_the_jobs_a_user_may_have_waiting(client, people, settings):
    settings.JOB_MAX_QUEUED_PER_USER = 2
    headers = {"Authorization": f"Bearer {token_for(people.users['bob'])}"}
    url = f"/api/v1/projects/{people.project.pk}/jobs/selfcheck"
    for _ in range(2):
        assert client.post(url, {"steps": 1}, content_type="application/json", headers=headers).status_code == 201
    refused = client.post(url, {"steps": 1}, content_type="application/json", headers=headers)
    assert refused.status_code == 422
    assert "2 jobs waiting" in refused.json()["detail"][0]["message"]
    alice = {"Authorization": f"Bearer {token_for(people.users['alice'])}"}
    assert client.post(url, {"steps": 1}, content_type="application/json", headers=alice).status_code == 201


# --- database connections under uvicorn -------------------------------------------------------

@pytest.mark.django_db(transaction=True)
def test_uvicorn_holds_no_connection_per_request_thread_by_default(service_env, process_logs, people):
    """24 clients at once: with persistent connections each request thread kept its own (78 seen)."""
    from django.db import connection

    app_name = f"conn-test-{os.getpid()}"
    env = {k: v for k, v in service_env.items() if k not in ("DATABASE_CONN_MAX_AGE", "DATABASE_POOL_SIZE")}
    env["DATABASE_URL"] = f"{service_env['DATABASE_URL']}?application_name={app_name}"
    port = free_port()
    procs = Processes()
    procs.start("uvicorn-connections", [sys.executable, "-m", "uvicorn", "webapp.asgi:application", "--host",
                                        "127.0.0.1", "--port", str(port), "--no-access-log"], env, process_logs)
    base = f"http://127.0.0.1:{port}"
    token = token_for(people.users["bob"])

    def get(path):
        request = urllib.request.Request(base + path, headers={"Authorization": f"Bearer {token}"})
        try:
            return urllib.request.urlopen(request, timeout=20).status
        except (urllib.error.HTTPError, OSError):
            return None

    def held() -> int:
        with connection.cursor() as cursor:
            cursor.execute("SELECT count(*) FROM pg_stat_activity WHERE application_name = %s", [app_name])
            return cursor.fetchone()[0]

    try:
        wait_for(lambda: get("/healthz") == 200, 60, 0.2, "uvicorn to serve /healthz")
        statuses: list = []
        for _ in range(3):
            threads = [threading.Thread(target=lambda: statuses.append(get("/api/v1/projects"))) for _ in range(24)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
        assert statuses.count(200) == 72, json.dumps(statuses)
        # Each request closed its connection when it ended; a thread-kept connection would still be here.
        wait_for(lambda: held() <= 1, 10, 0.2, "request connections to close")
    finally:
        procs.stop_all()
