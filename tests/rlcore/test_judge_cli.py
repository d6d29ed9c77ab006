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


def test_it_ranks_each_line_as_given_and_reversed(tmp_path, capsys):
    from rlcore.judges.testing_server import ScriptedReply, ranks_by_keyword

    rank = ranks_by_keyword("thanks")

    def policy(body):
        if "REFUSE" in body["messages"][-1]["content"]:
            return ScriptedReply(content=None, refusal="I can't rank that.")
        return rank(body)

    rows = write_pairs(tmp_path / "rankings.jsonl", [
        {"id": 7, "prompt": "Say hi", "responses": ["hi", "hi thanks thanks", "hi thanks"]},
        {"id": "x", "prompt": "REFUSE this", "responses": ["a", "b", "c"]},
    ])
    with ChatCompletionsServer(policy) as server:
        code = main(["judge", "rank", "--endpoint", server.base_url, "--model", "m", "--input", str(rows)])
    captured = capsys.readouterr()
    ranked, refused = [json.loads(line) for line in captured.out.splitlines()]
    assert code == 0 and (ranked["request_id"], refused["request_id"]) == ("7", "x")
    assert ranked["verdict"] == [1, 2, 0] and ranked["error"] is None
    assert ranked["forward_verdict"] == ranked["reversed_verdict"] == [1, 2, 0]
    assert ranked["position_bias"] is False and ranked["confidence"] == 1.0
    assert ranked["forward"]["raw_reply"] == "Ranking: 2 > 3 > 1"
    assert ranked["reversed"]["raw_reply"] == "Ranking: 2 > 1 > 3"  # the reversed list: "hi" is shown third
    assert "[Response 1]\nhi\n" in ranked["forward"]["rendered_prompt"]
    assert "[Response 3]\nhi\n" in ranked["reversed"]["rendered_prompt"]
    # No ranking is invented: the refusal leaves it empty, with the reason per order.
    assert refused["verdict"] is None and "I can't rank that." in refused["error"]
    assert "order as given" in refused["error"] and "order reversed" in refused["error"]
    assert "judge rank: 1/2 labelled, 0 with position bias, 1 without a label" in captured.err


def test_it_marks_a_ranking_that_follows_the_position_as_biased(tmp_path, capsys):
    from rlcore.judges.testing_server import always

    rows = write_pairs(tmp_path / "rankings.jsonl", [{"prompt": "p", "responses": ["x", "y", "z"]}])
    out = tmp_path / "ranked.jsonl"
    with ChatCompletionsServer(always("Ranking: 1 > 2 > 3")) as server:
        main(["judge", "rank", "--endpoint", server.base_url, "--model", "m", "--input", str(rows),
              "--output", str(out)])
    line = json.loads(out.read_text())
    assert (line["forward_verdict"], line["reversed_verdict"]) == ([0, 1, 2], [2, 1, 0])
    assert line["verdict"] == [0, 1, 2] and line["position_bias"] is True and line["confidence"] == 0.0
    assert json.loads(capsys.readouterr().out) == {"kind": "progress", "step": 1, "total": 1}


def test_it_names_the_line_and_field_of_a_bad_ranking(tmp_path, capsys):
    rows = write_pairs(tmp_path / "rankings.jsonl", [{"prompt": "p", "responses": ["x", "y"]},
                                                     {"prompt": "p", "responses": ["only one"]}])
    code = main(["judge", "rank", "--endpoint", "http://127.0.0.1:9/v1", "--model", "m", "--input", str(rows)])
    assert code == 2
    assert f"{rows}:2: field 'responses'" in capsys.readouterr().err


def test_it_grades_each_criterion_with_its_own_score_or_error(tmp_path, capsys):
    from rlcore.judges.testing_server import ScriptedReply

    def policy(body):
        text = body["messages"][-1]["content"]
        if "Criterion: polite" in text:
            return ScriptedReply(content="Score: 5\nConfidence: 0.8" if "thanks" in text else "Score: 1")
        return ScriptedReply(content="Score: 11")  # outside the 0..10 scale: no score, never clamped

    criteria = [{"name": "polite", "description": "is courteous", "scale_min": 1, "scale_max": 5},
                {"name": "correct", "scale_min": 0, "scale_max": 10}]
    rows = write_pairs(tmp_path / "grades.jsonl", [
        {"id": "g1", "prompt": "Say hi", "response": "hi, thanks", "criteria": criteria},
        {"id": "g2", "prompt": "Say hi", "response": "hi", "criteria": criteria[:1]},
    ])
    with ChatCompletionsServer(policy) as server:
        code = main(["judge", "grade", "--endpoint", server.base_url, "--model", "m", "--input", str(rows)])
    captured = capsys.readouterr()
    first, second = [json.loads(line) for line in captured.out.splitlines()]
    assert code == 0 and list(first["criteria"]) == ["polite", "correct"]
    polite, correct = first["criteria"]["polite"], first["criteria"]["correct"]
    assert (polite["score"], polite["confidence"], polite["error"]) == (5.0, 0.8, None)
    assert "Criterion: polite\nis courteous" in polite["rendered_prompt"] and polite["raw_reply"].startswith("Score: 5")
    assert correct["score"] is None and correct["error"] == "score 11.0 is outside the scale 0..10"
    assert first["error"] == "correct: score 11.0 is outside the scale 0..10"
    assert second["request_id"] == "g2" and second["criteria"]["polite"]["score"] == 1.0 and second["error"] is None
    assert "judge grade: 1/2 labelled" in captured.err


def test_it_rejects_a_grading_line_with_a_repeated_criterion(tmp_path, capsys):
    rows = write_pairs(tmp_path / "grades.jsonl", [
        {"prompt": "p", "response": "r", "criteria": [{"name": "x"}, {"name": "x"}]}])
    code = main(["judge", "grade", "--endpoint", "http://127.0.0.1:9/v1", "--model", "m", "--input", str(rows)])
    err = capsys.readouterr().err
    assert code == 2 and f"{rows}:1: field 'criteria'" in err and "must be unique" in err


def test_it_also_grades_every_response_on_a_rubric_when_asked(tmp_path, capsys):
    from rlcore.judges.testing_server import ScriptedReply

    compare = prefers_keyword("thanks")

    def policy(body):
        text = body["messages"][-1]["content"]
        if "Criterion: polite" in text:
            response = text.split("Response:\n", 1)[1].split("\n\nReference answer", 1)[0]
            return ScriptedReply(content="Score: 3" if "thanks" in response else "Score: 1")
        return compare(body)

    rubric = tmp_path / "rubric.json"
    rubric.write_text(json.dumps({"name": "r", "criteria": [
        {"name": "polite", "description": "is courteous", "scale_min": 1, "scale_max": 3},
        {"name": "short", "rule": {"kind": "max_length", "max_chars": 50}}]}))  # a rule: computed, not judged
    pairs = write_pairs(tmp_path / "pairs.jsonl",
                        [{"id": "p", "prompt": "Hi", "response_a": "hi", "response_b": "hi thanks"}])
    with ChatCompletionsServer(policy) as server:
        code = main(["judge", "pairwise", "--endpoint", server.base_url, "--model", "m", "--input", str(pairs),
                     "--rubric", str(rubric)])
    line = json.loads(capsys.readouterr().out)
    assert code == 0 and line["verdict"] == "B"
    scores = line["criterion_scores"]
    assert [list(s) for s in scores] == [["polite"], ["polite"]]
    assert (scores[0]["polite"]["score"], scores[1]["polite"]["score"]) == (1.0, 3.0)
    assert "Response:\nhi thanks" in scores[1]["polite"]["rendered_prompt"]
    assert server.stats.requests == 4  # both orders + one grade per response


def test_it_names_what_is_wrong_with_a_rubric_file(tmp_path, capsys):
    pairs = write_pairs(tmp_path / "rankings.jsonl", [{"prompt": "p", "responses": ["x", "y"]}])
    rubric = tmp_path / "rubric.json"
    for content, message in ((json.dumps([{"name": "ok"}, {"description": "x"}]), "criteria[1]: field 'name'"),
                             (json.dumps([{"name": "r", "rule": {"kind": "x"}}]), "no criterion for a judge"),
                             ("[", "not valid JSON")):
        rubric.write_text(content)
        code = main(["judge", "rank", "--endpoint", "http://127.0.0.1:9/v1", "--model", "m", "--input", str(pairs),
                     "--rubric", str(rubric)])
        assert code == 2 and message in capsys.readouterr().err
