"""The judge commands: pairwise labels as JSON lines, and the test server as a process."""

import json
import subprocess
import sys

import httpx

from rlcore.cli import main
from rlcore.judges.testing_server import ChatCompletionsServer, prefers_keyword


def write_pairs(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_it_writes_one_label_line_per_pair_with_both_orders(tmp_path, capsys):
    pairs = write_pairs(tmp_path / "pairs.jsonl", [
        {"id": "a", "prompt": "Say hi", "response_a": "hi, thanks", "response_b": "hi"},
        {"id": "b", "prompt": "Say hi", "response_a": "hi", "response_b": "hi"},
    ])
    with ChatCompletionsServer(prefers_keyword("thanks")) as server:
        code = main(["judge", "pairwise", "--endpoint", server.base_url, "--model", "m", "--input", str(pairs)])
    captured = capsys.readouterr()
    lines = [json.loads(line) for line in captured.out.splitlines()]
    assert code == 0 and [line["request_id"] for line in lines] == ["a", "b"]
    first, second = lines
    assert (first["verdict"], first["forward_verdict"], first["swapped_verdict"]) == ("A", "A", "A")
    assert first["position_bias"] is False and first["confidence_source"] == "logprobs"
    assert first["forward"]["raw_reply"].startswith("Verdict: A")
    assert "[Response A]\nhi, thanks" in first["forward"]["rendered_prompt"]
    assert "[Response B]\nhi, thanks" in first["swapped"]["rendered_prompt"]
    assert second["verdict"] == "tie"
    assert "2/2 labelled, 0 with position bias" in captured.err


def test_it_names_the_line_and_field_of_a_bad_pair(tmp_path, capsys):
    pairs = write_pairs(tmp_path / "pairs.jsonl", [{"prompt": "p", "response_a": "x", "response_b": "y"},
                                                   {"prompt": "p", "response_a": "x"}])
    code = main(["judge", "pairwise", "--endpoint", "http://127.0.0.1:9/v1", "--model", "m", "--input", str(pairs)])
    assert code == 2
    assert f"{pairs}:2: field 'response_b'" in capsys.readouterr().err


def test_it_writes_labels_to_a_file_and_reports_progress(tmp_path, capsys):
    pairs = write_pairs(tmp_path / "pairs.jsonl", [{"prompt": "p", "response_a": "x", "response_b": "y thanks"}])
    out = tmp_path / "labels.jsonl"
    with ChatCompletionsServer(prefers_keyword("thanks")) as server:
        main(["judge", "pairwise", "--endpoint", server.base_url, "--model", "m", "--input", str(pairs),
              "--output", str(out)])
    assert json.loads(out.read_text())["verdict"] == "B"
    assert json.loads(capsys.readouterr().out) == {"kind": "progress", "step": 1, "total": 1}


def test_it_serves_a_test_endpoint_from_the_command_line():
    process = subprocess.Popen([sys.executable, "-m", "rlcore", "judge", "serve-test", "--port", "0",
                                "--reply", "Verdict: B"], stdout=subprocess.PIPE, text=True)
    try:
        url = process.stdout.readline().strip().rsplit(" ", 1)[-1]
        assert url.startswith("http://127.0.0.1:") and url.endswith("/v1")
        assert httpx.get(url + "/models", timeout=5).json()["data"][0]["id"] == "test-judge"
        reply = httpx.post(url + "/chat/completions", timeout=5,
                           json={"model": "x", "messages": [{"role": "user", "content": "A or B?"}]}).json()
        assert reply["choices"][0]["message"]["content"] == "Verdict: B"
    finally:
        process.terminate()
        process.wait(timeout=10)
