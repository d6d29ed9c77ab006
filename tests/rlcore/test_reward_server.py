"""`python -m rlcore reward serve`: a real server child, called over HTTP as trainers call it.

Values are compared with in-process scoring (`score_rows`) of the same rows; every refused request must
name its field, and the server must go on serving the next caller.
"""

from __future__ import annotations

import http.client
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from rlcore.rewards.check import save_spec
from rlcore.rewards.engine import score_rows
from rlcore.rewards.spec import RewardSpec

ROOT = Path(__file__).resolve().parents[2]
RULES = [
    {"kind": "rubric_rules", "name": "polite", "rubric": {"name": "r", "criteria": [
        {"name": "thanks", "rule": {"kind": "contains", "texts": ["thanks"]}},
        {"name": "no_url", "rule": {"kind": "regex", "pattern": "https?://", "must_match": False}}]}},
    {"kind": "verifier", "name": "correct", "reference_column": "answer", "mode": "numeric"},
    {"kind": "length_penalty", "name": "overlong", "max_length": 8, "cache_length": 4, "unit": "words",
     "weight": 0.5},
]
ROWS = [
    {"prompt": "2+2?", "completion": "thanks, it is 4", "answer": "4"},
    {"prompt": "2+2?", "completion": "it is 5, see http://x.y and many more words than allowed", "answer": "4"},
    {"prompt": "2+2?", "completion": "4", "answer": "4"},
    {"prompt": "3+3?", "completion": "thanks: 6", "answer": "6"},
    {"prompt": "3+3?", "completion": "I think seven", "answer": "6"},
]


class Server:
    def __init__(self, child: subprocess.Popen, url: str, token: str | None) -> None:
        self.child, self.url, self.token = child, url, token
        host, port = url.removeprefix("http://").rsplit(":", 1)
        self.host, self.port = host, int(port)

    def call(self, method: str, path: str, body=None, *, token: str | None = "default", raw: bytes | None = None,
             headers: dict | None = None) -> tuple[int, dict]:
        connection = http.client.HTTPConnection(self.host, self.port, timeout=60)
        sent = dict(headers or {})
        token = self.token if token == "default" else token
        if token:
            sent["Authorization"] = f"Bearer {token}"
        data = raw if raw is not None else (None if body is None else json.dumps(body).encode())
        connection.request(method, path, data, sent)
        response = connection.getresponse()
        payload = json.loads(response.read() or b"null")
        connection.close()
        return response.status, payload


def start(spec_path: Path, *extra: str, token: str | None = None, env: dict | None = None) -> Server:
    argv = [sys.executable, "-m", "rlcore", "reward", "serve", "--spec", str(spec_path), "--port", "0",
            "--log-seconds", "0.2", *extra]
    child = subprocess.Popen(argv, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                             env={**os.environ, **(env or {})})
    lines = []
    for line in child.stdout:
        lines.append(line)
        if line.startswith("{") and json.loads(line).get("type") == "reward_server":
            return Server(child, json.loads(line)["path"], token)
    raise AssertionError(f"the server exited with {child.wait()}:\n{''.join(lines)}")


def stop(server: Server) -> str:
    server.child.terminate()
    out, _ = server.child.communicate(timeout=30)
    return out


@pytest.fixture
def rules_spec(tmp_path) -> RewardSpec:
    spec = RewardSpec(name="rules", components=RULES, normalization="group_zscore")
    save_spec(spec, tmp_path / "spec.yaml")
    return spec


@pytest.fixture
def server(rules_spec, tmp_path):
    token_file = tmp_path / "token"
    token_file.write_text("s3cret-token\n")
    served = start(tmp_path / "spec.yaml", "--token-file", str(token_file), "--max-rows", "8",
                   "--max-body-bytes", "20000", "--label-column", "answer", token="s3cret-token")
    yield served
    stop(served)


def test_it_scores_the_json_endpoint_as_in_process_scoring(server, rules_spec):
    expected = score_rows(rules_spec, ROWS)
    status, body = server.call("POST", "/score", {"rows": ROWS})
    assert status == 200, body
    assert body["rewards"] == pytest.approx([r.total for r in expected])
    assert body["raw_rewards"] == pytest.approx([r.raw_total for r in expected])
    for name in ("polite", "correct", "overlong"):
        assert body["components"][name] == pytest.approx([r.components[name] for r in expected])
    # a hand check of the components that do not depend on rlcore: row 0 says thanks, has no URL, is right
    assert body["components"]["polite"][0] == 1.0 and body["components"]["correct"][0] == 1.0
    assert body["components"]["correct"][1] == 0.0 and body["components"]["overlong"][1] == -1.0  # 12 words, max 8
    assert body["unscored"] == []


def test_it_speaks_the_openrlhf_remote_reward_model_shape(server, rules_spec):
    template = "<|user|>{}<|assistant|>"
    prompts = [template.format(row["prompt"]) for row in ROWS]
    # OpenRLHF's query is the decoded sequence: left padding, the prompt, the response
    queries = ["<pad><pad>" + p + row["completion"] for p, row in zip(prompts, ROWS)]
    status, body = server.call("POST", "/get_reward", {"query": queries, "prompts": prompts,
                                                       "labels": [row["answer"] for row in ROWS]})
    assert status == 200, body
    expected = score_rows(rules_spec, [{**row, "prompt": p} for p, row in zip(prompts, ROWS)])
    assert body["rewards"] == pytest.approx([r.total for r in expected])
    assert body["components"]["correct"] == [1.0, 0.0, 1.0, 1.0, 0.0]


def test_it_answers_health_and_an_openapi_document_built_from_the_contracts(server):
    from rlcore.rewards.serve import ScoreRequest

    status, health = server.call("GET", "/health", token=None)
    assert status == 200 and health["status"] == "ok" and health["components"] == ["polite", "correct", "overlong"]
    status, document = server.call("GET", "/openapi.json", token=None)
    assert status == 200
    assert set(document["paths"]) == {"/score", "/get_reward", "/health"}
    schema = document["components"]["schemas"]["ScoreRequest"]
    assert schema["properties"]["rows"]["items"] == {"$ref": "#/components/schemas/ScoreRow"}
    assert set(schema["properties"]) == set(ScoreRequest.model_json_schema()["properties"])


@pytest.mark.parametrize("case, expected_status, expected_field", [
    ("not json", 422, "body"),
    ("no completion", 422, "rows[1].completion"),
    ("rows not a list", 422, "rows"),
    ("missing column", 422, "rows"),
    ("too many rows", 413, "rows"),
    ("too big a body", 413, "body"),
    ("wrong token", 401, "Authorization"),
    ("no token", 401, "Authorization"),
    ("labels without queries", 422, "labels"),
    ("query without its prompt", 422, "query[0]"),
    ("unknown endpoint", 404, "path"),
])
def test_it_refuses_bad_input_naming_the_field_and_keeps_serving(server, rules_spec, case, expected_status,
                                                                 expected_field):
    good = {"rows": ROWS[:2]}
    calls = {
        "not json": lambda: server.call("POST", "/score", raw=b'{"rows": ['),
        "no completion": lambda: server.call("POST", "/score", {"rows": [ROWS[0], {"prompt": "x", "answer": "1"}]}),
        "rows not a list": lambda: server.call("POST", "/score", {"rows": "a"}),
        "missing column": lambda: server.call("POST", "/score", {"rows": [{"prompt": "x", "completion": "y"}]}),
        "too many rows": lambda: server.call("POST", "/score", {"rows": ROWS * 2}),
        "too big a body": lambda: server.call("POST", "/score", {"rows": [{**ROWS[0], "completion": "x" * 30000}]}),
        "wrong token": lambda: server.call("POST", "/score", good, token="guess"),
        "no token": lambda: server.call("POST", "/score", good, token=None),
        "labels without queries": lambda: server.call("POST", "/get_reward", {"query": ["a", "b"], "labels": ["1"]}),
        "query without its prompt": lambda: server.call("POST", "/get_reward", {"query": ["hello"], "prompts": ["Q"],
                                                                                "labels": ["1"]}),
        "unknown endpoint": lambda: server.call("POST", "/scores", good),
    }
    status, body = calls[case]()
    assert status == expected_status, body
    assert body["detail"][0]["field"] == expected_field
    assert body["detail"][0]["message"]
    if case == "missing column":
        assert "'answer'" in body["detail"][0]["message"]
    status, body = server.call("POST", "/score", good)
    assert status == 200 and body["rewards"] == pytest.approx([r.total for r in score_rows(rules_spec, ROWS[:2])])


def test_it_refuses_to_listen_beyond_loopback_without_a_token(rules_spec, tmp_path):
    done = subprocess.run([sys.executable, "-m", "rlcore", "reward", "serve", "--spec", str(tmp_path / "spec.yaml"),
                           "--host", "0.0.0.0", "--port", "0"], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert "--host 0.0.0.0 reaches beyond this machine: give a bearer token" in done.stderr


def test_it_logs_the_requests_it_served(rules_spec, tmp_path):
    served = start(tmp_path / "spec.yaml")
    for _ in range(3):
        assert served.call("POST", "/score", {"rows": ROWS})[0] == 200
    assert served.call("POST", "/score", {"rows": []})[0] == 422
    import time

    time.sleep(0.6)
    log = stop(served)
    assert "3 requests (15 completions)" in log
    assert "refused /score (422, rows)" in log
    assert "stopped after 3 requests (15 completions, 1 refused)" in log


def test_a_reward_model_deleted_while_served_is_refused_naming_its_field(tmp_path):
    from rlcore.training.tiny_models import build_tiny_reward_model

    model = build_tiny_reward_model(tmp_path / "rm")
    spec = RewardSpec(name="rm", components=[*RULES, {"kind": "reward_model", "name": "rm", "path": str(model),
                                                      "device": "cpu"}])
    save_spec(spec, tmp_path / "spec.yaml")
    withdrawn = tmp_path / "withdrawn.json"
    served = start(tmp_path / "spec.yaml", "--withdrawn-file", str(withdrawn), env={"CUDA_VISIBLE_DEVICES": ""})
    try:
        status, body = served.call("POST", "/score", {"rows": ROWS})
        assert status == 200, body
        assert body["components"]["rm"] == pytest.approx([r.components["rm"] for r in score_rows(spec, ROWS)],
                                                         abs=1e-5)
        withdrawn.write_text(json.dumps({str(model): "deleted from the registry"}))
        status, body = served.call("POST", "/score", {"rows": ROWS})
        assert status == 409
        assert body["detail"][0]["field"] == "spec.components[3].path"
        assert "deleted from the registry" in body["detail"][0]["message"]
        withdrawn.unlink()
        assert served.call("POST", "/score", {"rows": ROWS})[0] == 200
        shutil.rmtree(model)
        status, body = served.call("POST", "/score", {"rows": ROWS})
        assert status == 409 and "does not exist" in body["detail"][0]["message"]
        assert served.call("GET", "/health")[0] == 200  # still serving
    finally:
        stop(served)
