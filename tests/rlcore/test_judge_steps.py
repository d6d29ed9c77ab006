"""`python -m rlcore judge steps`: an LM grades every step of each response, through the loopback server."""

import json

from rlcore.cli import main
from rlcore.judges.testing_server import ChatCompletionsServer, ScriptedReply, always, grades_steps_by_keyword, \
    scripted


def write_lines(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def judge_steps(server, items, tmp_path, *extra):
    out = tmp_path / "labels.jsonl"
    code = main(["judge", "steps", "--endpoint", server.base_url, "--model", "m", "--input", str(items),
                 "--output", str(out), "--max-retries", "2", *extra])
    return code, [json.loads(line) for line in out.read_text().splitlines()]


def test_it_grades_every_step_with_the_earlier_steps_as_context(tmp_path, capsys):
    items = write_lines(tmp_path / "steps.jsonl", [
        {"id": "7", "prompt": "What is 2+2, doubled?", "steps": ["2+2=4", "sorry, 4*2=9", "so 9"]},
        {"id": "8", "prompt": "Say hi", "completions": ["hi", "there"], "labels": [True, True]},
    ])
    with ChatCompletionsServer(grades_steps_by_keyword("sorry")) as server:
        code, lines = judge_steps(server, items, tmp_path)
    assert code == 0 and [line["request_id"] for line in lines] == ["7", "8"]
    first, second = lines
    assert first["grades"] == [1, -1, 1] and first["first_error"] == 1 and first["error"] is None
    assert first["scale"] == "ternary" and first["judge"].endswith("[default-steps@1]")
    shown = first["steps"][1]["rendered_prompt"]
    assert "Steps so far:\n1. 2+2=4\n\nStep 2 of 3:\nsorry, 4*2=9" in shown
    assert "Steps so far:\n(none)" in first["steps"][0]["rendered_prompt"]
    assert [s["raw_reply"] for s in first["steps"]] == ["Score: 1", "Score: -1", "Score: 1"]
    assert second["grades"] == [1, 1] and second["first_error"] is None
    assert "2/2 labelled" in capsys.readouterr().err


def test_it_rounds_a_score5_grade_to_the_nearest_grade_and_counts_1_and_2_as_wrong(tmp_path):
    items = write_lines(tmp_path / "steps.jsonl", [{"id": "1", "prompt": "p", "steps": ["a", "b", "c"]}])
    replies = [ScriptedReply(content=f"Score: {x}") for x in ("4.6", "3.4", "2.5")]
    with ChatCompletionsServer(scripted(replies)) as server:
        code, [line] = judge_steps(server, items, tmp_path, "--scale", "score5", "--max-concurrency", "1")
    # 4.6 -> 5, 3.4 -> 3, 2.5 -> 3 (half rounds up): no step at 1-2, so no first error
    assert code == 0 and line["grades"] == [5, 3, 3] and line["first_error"] is None
    assert [s["score"] for s in line["steps"]] == [4.6, 3.4, 2.5]


def test_it_gives_no_grades_when_a_step_has_none_and_names_the_step(tmp_path, capsys):
    items = write_lines(tmp_path / "steps.jsonl", [{"id": "1", "prompt": "p", "steps": ["a", "b"]}])
    replies = [ScriptedReply(content="Score: 1"), ScriptedReply(content="looks fine to me")]
    with ChatCompletionsServer(scripted(replies)) as server:
        code, [line] = judge_steps(server, items, tmp_path, "--max-concurrency", "1")
    assert code == 0 and line["grades"] is None and line["first_error"] is None
    assert line["error"].startswith("step 2: no score found")
    assert line["steps"][0]["score"] == 1.0
    assert "0/1 labelled" in capsys.readouterr().err


def test_it_retries_a_failed_call_and_bounds_the_requests_in_flight(tmp_path):
    items = write_lines(tmp_path / "steps.jsonl",
                        [{"id": str(i), "prompt": "p", "steps": ["a", "b", "c"]} for i in range(4)])
    first = [ScriptedReply(status=500)]
    with ChatCompletionsServer(scripted(first, then=ScriptedReply(content="Score: 0")), latency_s=0.02) as server:
        code, lines = judge_steps(server, items, tmp_path, "--max-concurrency", "2")
        stats = server.stats
    assert code == 0 and all(line["grades"] == [0, 0, 0] for line in lines)
    assert stats.requests == 13 and stats.max_in_flight <= 2  # 12 steps + the one retried after the 500


def test_it_names_the_line_and_field_of_a_bad_item(tmp_path, capsys):
    items = write_lines(tmp_path / "steps.jsonl", [{"prompt": "p", "steps": ["a"]}, {"prompt": "p", "steps": []}])
    with ChatCompletionsServer(always("Score: 1")) as server:
        code = main(["judge", "steps", "--endpoint", server.base_url, "--model", "m", "--input", str(items)])
    assert code == 2
    assert f"{items}:2: field 'steps'" in capsys.readouterr().err


def test_it_reads_a_steps_template_from_a_file_and_refuses_an_unknown_placeholder(tmp_path, capsys):
    items = write_lines(tmp_path / "steps.jsonl", [{"id": "1", "prompt": "p", "steps": ["a", "b"]}])
    good = tmp_path / "good.json"
    good.write_text(json.dumps({"steps": {"name": "terse", "version": 3, "mode": "steps",
                                          "text": "Grade step {step_number}/{n_steps}: {step}"}}))
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"steps": {"name": "terse", "mode": "steps", "text": "{response}"}}))
    with ChatCompletionsServer(always("Score: 1")) as server:
        code, [line] = judge_steps(server, items, tmp_path, "--templates", str(good))
        assert code == 0 and line["steps"][1]["rendered_prompt"] == "Grade step 2/2: b"
        assert line["judge"].endswith("[terse@3]")
        code = main(["judge", "steps", "--endpoint", server.base_url, "--model", "m", "--input", str(items),
                     "--templates", str(bad)])
    assert code == 2 and "unknown placeholder {response}" in capsys.readouterr().err


def test_it_takes_each_lines_own_scale_and_counts_its_outcome(tmp_path):
    from rlcore.judges.outcomes import line_outcome

    items = write_lines(tmp_path / "steps.jsonl", [{"id": "1", "prompt": "p", "steps": ["a"], "scale": "score5"},
                                                   {"id": "2", "prompt": "p", "steps": ["a"]}])
    with ChatCompletionsServer(always("Score: 1")) as server:
        code, lines = judge_steps(server, items, tmp_path)
    assert code == 0 and [(line["scale"], line["grades"], line["first_error"]) for line in lines] == [
        ("score5", [1], 0), ("ternary", [1], None)]  # score5's 1 is a wrong step; ternary's 1 a good one
    assert "between 1 and 5" in lines[0]["steps"][0]["rendered_prompt"]
    assert [line_outcome(line, "steps") for line in lines] == ["verdict", "verdict"]
    refused = {"grades": None, "steps": [{"error": None}, {"error": "judge refused: no"}]}
    assert line_outcome(refused, "steps") == "refused"
