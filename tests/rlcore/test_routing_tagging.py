"""`python -m rlcore routing tag` against a real loopback OpenAI-compatible server."""

import json

from rlcore.cli import main
from rlcore.judges.testing_server import ChatCompletionsServer, ScriptedReply
from rlcore.routing.features import RoutingComparison, extract_features
from rlcore.routing.tagging import parse_tag_reply

CATEGORIES = ["math", "code", "writing", "safety", "other"]


def tagger_policy(body: dict) -> ScriptedReply:
    """Tags by a keyword of the user prompt; refuses REFUSE prompts, rambles on RAMBLE ones."""
    text = str(body["messages"][-1]["content"]).split("[Prompt]", 1)[1]
    if "REFUSE" in text:
        return ScriptedReply(content=None, refusal="I can't help with that.")
    if "RAMBLE" in text:
        return ScriptedReply(content="Hard to say, it is a bit of everything.")
    if "BOTH" in text:
        return ScriptedReply(content="Categories: Math, code.")
    if "integral" in text:
        return ScriptedReply(content="category:  **MATH**")
    if "python" in text.lower():
        return ScriptedReply(content="Reasoning: it asks for a program.\nCategory: Code")
    return ScriptedReply(content="Category: other")


def write_prompts(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def run_tag(server, tmp_path, rows, *extra):
    prompts = write_prompts(tmp_path / "prompts.jsonl", rows)
    out = tmp_path / "tags.jsonl"
    code = main(["routing", "tag", "--endpoint", server.base_url, "--model", "tagger", "--input", str(prompts),
                 "--output", str(out), "--categories", ",".join(CATEGORIES), "--max-retries", "0", *extra])
    return code, [json.loads(line) for line in out.read_text().splitlines()] if out.exists() else []


def test_it_tags_each_prompt_and_gives_refusals_and_rambles_no_tag_with_the_reason(tmp_path, capsys):
    rows = [{"id": 1, "prompt": "Solve the integral of x^2"}, {"id": 2, "prompt": "Write Python to sort"},
            {"id": 3, "prompt": "REFUSE this"}, {"id": 4, "prompt": "RAMBLE on"}, {"id": 5, "prompt": "BOTH"},
            {"id": 6, "prompt": "Hello there"}]
    with ChatCompletionsServer(tagger_policy) as server:
        code, lines = run_tag(server, tmp_path, rows)
        assert server.stats.requests == 6
    captured = capsys.readouterr()
    assert code == 0, captured.err
    by_id = {line["id"]: line for line in lines}
    assert [line["id"] for line in lines] == ["1", "2", "3", "4", "5", "6"]
    assert by_id["1"]["tags"] == ["math"] and by_id["1"]["error"] is None
    assert by_id["2"]["tags"] == ["code"] and by_id["6"]["tags"] == ["other"]
    for pid in ("3", "4", "5"):
        assert by_id[pid]["tags"] == [] and by_id[pid]["error"]
    assert "I can't help with that." in by_id["3"]["error"] and "names none of the categories" in by_id["3"]["error"]
    assert "bit of everything" in by_id["4"]["error"]
    assert by_id["5"]["error"] == "the reply names several categories (math, code) but one was asked for"
    events = [json.loads(line) for line in captured.out.splitlines()]
    assert {"kind": "progress", "step": 6, "total": 6} in events
    artifact = next(e for e in events if e["kind"] == "artifact")
    assert artifact["type"] == "prompt_tags" and artifact["tagged"] == 3
    assert "3/6 prompts tagged, 3 without a tag" in captured.err


def test_it_allows_several_categories_when_asked_and_renders_the_list(tmp_path, capsys):
    seen = []

    def policy(body):
        seen.append(body["messages"][-1]["content"])
        return tagger_policy(body)

    with ChatCompletionsServer(policy) as server:
        code, lines = run_tag(server, tmp_path, [{"id": "a", "prompt": "BOTH"}], "--multi-label")
    assert code == 0 and lines[0]["tags"] == ["math", "code"]
    assert "Categories: math, code, writing, safety, other" in seen[0] and "one or more" in seen[0]


def test_it_gives_every_prompt_the_call_error_when_the_endpoint_fails(tmp_path, capsys):
    with ChatCompletionsServer(lambda body: ScriptedReply(status=500, error_message="boom")) as server:
        code, lines = run_tag(server, tmp_path, [{"id": "a", "prompt": "x"}, {"id": "b", "prompt": "y"}])
    assert code == 0 and [line["tags"] for line in lines] == [[], []]
    assert all(line["error"].startswith("the tagger call failed:") and "500" in line["error"] for line in lines)


def test_it_names_the_line_and_field_of_a_bad_prompt_and_bad_categories(tmp_path, capsys):
    prompts = write_prompts(tmp_path / "p.jsonl", [{"id": 1, "prompt": "x"}, {"id": 2, "prompt": 3}])
    args = ["routing", "tag", "--endpoint", "http://127.0.0.1:9/v1", "--model", "m", "--input", str(prompts),
            "--output", str(tmp_path / "o.jsonl")]
    assert main([*args, "--categories", "math,code"]) == 2
    assert f"{prompts}:2: field 'prompt' must be a string" in capsys.readouterr().err
    assert main([*args, "--categories", "math"]) == 2
    assert "at least two category names" in capsys.readouterr().err
    assert main([*args, "--categories", "math,<b>"]) == 2
    assert "'<b>' is not a category name" in capsys.readouterr().err


def test_it_never_invents_a_tag_outside_the_list():
    assert parse_tag_reply("Category: poetry", CATEGORIES).tags == []
    assert parse_tag_reply("Category: mathematics", CATEGORIES).tags == []
    assert parse_tag_reply("", CATEGORIES).error == "the reply is empty"
    assert parse_tag_reply("Safety.", CATEGORIES).tags == ["safety"]


def test_its_tags_become_category_features():
    tags = {"Solve x": ["math"]}
    raw = extract_features([RoutingComparison(comparison_id="1", prompt="Solve x", response_a="a", response_b="b")],
                           tagger=lambda prompt: tags.get(prompt, []))
    assert raw[0].tags == ["math"]
