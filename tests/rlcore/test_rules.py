"""Rule checks: what each kind accepts and rejects, and that bad rules are caught at save time."""

import time

import pytest
from pydantic import TypeAdapter, ValidationError

from rlcore.rules import (
    AnswerMatchRule,
    FormatRule,
    JsonRule,
    LengthRule,
    RegexRule,
    Rule,
    compile_rule,
    extract_answer,
    parse_number,
    rule_problems,
)

RULE = TypeAdapter(Rule)


def run(rule: dict, text: str, row: dict | None = None, n_tokens: int | None = None):
    return compile_rule(RULE.validate_python(rule))(text, row or {}, n_tokens)


def test_it_matches_regexes_with_flags_and_negation():
    assert run({"kind": "regex", "pattern": r"^\d+$"}, "123") == 1.0
    assert run({"kind": "regex", "pattern": r"^\d+$"}, "1\n2") == 0.0
    assert run({"kind": "regex", "pattern": r"^\d+$", "multiline": True}, "a\n2") == 1.0
    assert run({"kind": "regex", "pattern": "secret", "must_match": False, "ignore_case": True}, "a SECRET") == 0.0
    assert run({"kind": "regex", "pattern": "a.b", "dot_all": True}, "a\nb") == 1.0


def test_it_runs_a_catastrophic_backtracking_pattern_in_linear_time():
    rule = RegexRule(kind="regex", pattern=r"^(a+)+$")
    assert rule_problems(rule) == []
    check = compile_rule(rule)
    start = time.perf_counter()
    assert check("a" * 50_000 + "!", {}, None) == 0.0
    assert time.perf_counter() - start < 0.5


def test_it_names_the_field_of_a_pattern_re2_cannot_compile():
    problems = rule_problems(RegexRule(kind="regex", pattern=r"(\w)\1"), where="criterion 'twice'", prefix="rule.")
    assert [(p.where, p.field) for p in problems] == [("criterion 'twice'", "rule.pattern")]
    assert "back-references" in problems[0].message
    assert rule_problems(RegexRule(kind="regex", pattern="[a-"))[0].field == "pattern"


def test_it_checks_contains_any_all_and_not_contains():
    assert run({"kind": "contains", "texts": ["Thanks", "please"]}, "THANKS a lot") == 1.0
    assert run({"kind": "contains", "texts": ["Thanks"], "case_sensitive": True}, "THANKS") == 0.0
    assert run({"kind": "contains", "texts": ["a", "b"], "mode": "all"}, "a only") == 0.0
    assert run({"kind": "not_contains", "texts": ["as an ai"]}, "As an AI, I...") == 0.0
    assert rule_problems(RULE.validate_python({"kind": "contains", "texts": [""]}))[0].field == "texts[0]"


def test_it_bounds_length_in_chars_words_or_trainer_tokens():
    assert run({"kind": "length", "min": 2, "max": 5}, "abcdef") == 0.0
    assert run({"kind": "length", "max": 2, "unit": "words"}, "two words") == 1.0
    assert run({"kind": "length", "max": 2, "unit": "tokens"}, "one two three") == 0.0  # words when no ids
    assert run({"kind": "length", "max": 2, "unit": "tokens"}, "one two three", n_tokens=2) == 1.0
    assert rule_problems(LengthRule(kind="length", min=5, max=2))[0].field == "max"
    assert rule_problems(LengthRule(kind="length"))[0].message == "give min, max or both"


def test_it_validates_json_against_a_schema_and_accepts_a_fence():
    schema = {"type": "object", "required": ["name"], "properties": {"name": {"type": "string"}}}
    rule = {"kind": "json", "schema": schema}
    assert run(rule, '{"name": "x"}') == 1.0
    assert run(rule, '{"name": 3}') == 0.0
    assert run(rule, '```json\n{"name": "x"}\n```') == 1.0
    assert run({"kind": "json", "allow_code_fence": False}, '```json\n{"name": "x"}\n```') == 0.0
    assert run({"kind": "json"}, "{not json") == 0.0


def test_it_rejects_a_json_schema_that_is_not_a_schema():
    problems = rule_problems(JsonRule(kind="json", schema={"type": "object", "properties": {"a": {"type": 5}}}))
    assert len(problems) == 1 and problems[0].field == "schema"
    assert problems[0].message.startswith("not a valid JSON Schema (at /properties/a/type): 5 is not valid")


def test_it_matches_answers_exactly_numerically_and_symbolically():
    row = {"answer": "1/2"}
    assert run({"kind": "answer_match", "reference_column": "answer", "mode": "math"}, r"\boxed{\frac{1}{2}}", row) == 1.0
    assert run({"kind": "answer_match", "reference_column": "answer", "mode": "math"}, r"\boxed{0.5}", row) == 1.0
    assert run({"kind": "answer_match", "reference_column": "answer", "mode": "math"}, r"\boxed{2}", row) == 0.0
    assert run({"kind": "answer_match", "reference_column": "answer", "mode": "numeric"}, "It is 0.5.", row) == 1.0
    assert run({"kind": "answer_match", "reference_column": "city", "mode": "exact"}, "Answer: paris", {"city": "Paris"}) == 1.0
    assert run({"kind": "answer_match", "reference_column": "city", "mode": "exact"}, "Answer: Lyon", {"city": "Paris"}) == 0.0


def test_it_does_not_apply_an_answer_match_without_a_reference():
    assert run({"kind": "answer_match", "reference_column": "answer"}, "42", {}) is None
    assert run({"kind": "answer_match", "reference_column": "answer"}, "42", {"answer": " "}) is None


def test_it_reads_numbers_and_final_answers():
    assert parse_number("costs $1,234.50 in total") == 1234.5
    assert parse_number("50%") == 0.5
    assert extract_answer("<answer>7</answer> and \\boxed{8}") == "8"


@pytest.mark.parametrize("check, value, good, bad", [
    ("think_answer_tags", None, "<think>a</think>\n<answer>b</answer>", "<answer>b</answer>"),
    ("answer_tags", None, "x <answer>b</answer>", "<answer>a</answer><answer>b</answer>"),
    ("boxed_answer", None, "so \\boxed{3}", "so 3"),
    ("starts_with", "Dear", "  Dear Sir", "Hi"),
    ("ends_with", "Regards.", "...\nRegards.  ", "Regards. Bye"),
    ("bullet_list", None, "- a\n- b", "- a only"),
    ("numbered_list", None, "1. a\n2) b", "1. a"),
    ("no_urls", None, "see the docs", "see https://x.org"),
    ("no_code_block", None, "plain", "```py\nx\n```"),
    ("single_paragraph", None, "one\nline", "one\n\ntwo"),
])
def test_it_runs_each_format_check(check, value, good, bad):
    rule = {"kind": "format", "check": check, "value": value}
    assert (run(rule, good), run(rule, bad)) == (1.0, 0.0)


def test_it_asks_for_the_text_of_starts_with():
    assert rule_problems(FormatRule(kind="format", check="starts_with"))[0].field == "value"


def test_it_refuses_unknown_rule_kinds_and_fields():
    with pytest.raises(ValidationError):
        RULE.validate_python({"kind": "telepathy"})
    with pytest.raises(ValidationError):
        AnswerMatchRule(kind="answer_match", reference_column="a", mode="exact", fuzzy=True)


def test_it_checks_think_answer_tags_exactly_as_the_reference_regex():
    import random

    from rlcore.rules import _THINK_ANSWER, think_answer_format

    parts = ["<think>", "</think>", "<answer>", "</answer>", " ", "\n", "a"]
    rng = random.Random(0)
    for _ in range(20_000):
        text = "".join(rng.choices(parts, k=rng.randint(0, 8)))
        if rng.random() < 0.5:
            text = f"<think>{text}</answer>"
        assert think_answer_format(text) == bool(_THINK_ANSWER.fullmatch(text)), repr(text)


def _timed(check, text):
    start = time.perf_counter()
    result = check(text, {}, None)
    return result, time.perf_counter() - start


@pytest.mark.parametrize("schema, good, hostile_result", [
    ({"type": "string", "pattern": "^(a+)+$"}, '"aaa"', 0.0),
    ({"type": "object", "patternProperties": {"^(a+)+$": {"type": "integer"}}}, '{"aaa": 1}', 1.0),
    ({"type": "object", "patternProperties": {"^(a+)+$": {}}, "additionalProperties": False}, '{"aaa": 1}', 0.0),
])
def test_it_runs_catastrophic_json_schema_patterns_in_linear_time(schema, good, hostile_result):
    # with jsonschema's own `re` each of these hangs for minutes on 29 a's and a '!'
    hostile = "a" * 29 + "!"
    check = compile_rule(RULE.validate_python({"kind": "json", "schema": schema}))
    assert rule_problems(RULE.validate_python({"kind": "json", "schema": schema})) == []
    value = f'"{hostile}"' if schema["type"] == "string" else f'{{"{hostile}": "x"}}'
    result, seconds = _timed(check, value)
    assert result == hostile_result and seconds < 2
    assert check(good, {}, None) == 1.0


def test_it_keeps_json_schema_pattern_semantics_on_re2():
    properties = {"kind": "json", "schema": {"type": "object", "properties": {"id": {"type": "string"}},
                                             "patternProperties": {"^x-": {"type": "integer"}},
                                             "additionalProperties": False}}
    assert run(properties, '{"id": "a", "x-n": 2}') == 1.0
    assert run(properties, '{"id": "a", "x-n": "two"}') == 0.0  # patternProperties' subschema applies
    assert run(properties, '{"id": "a", "other": 1}') == 0.0  # neither a property nor a pattern
    assert run({"kind": "json", "schema": {"type": "string", "pattern": "b"}}, '"abc"') == 1.0  # search, not match


def test_it_names_a_json_schema_pattern_re2_cannot_run():
    rule = RULE.validate_python({"kind": "json", "schema": {
        "properties": {"a": {"type": "string", "pattern": "(x)\\1"}}, "enum": [{"pattern": "(?=ok-as-data)"}]}})
    problems = rule_problems(rule, prefix="rule.")
    assert [p.field for p in problems] == ["rule.schema"]
    assert "/properties/a/pattern" in problems[0].message and "back-references" in problems[0].message
    mixed = RULE.validate_python({"kind": "json", "schema": {
        "patternProperties": {"^a": {}}, "unevaluatedProperties": False}})
    assert "unevaluatedProperties" in rule_problems(mixed)[0].message


@pytest.mark.parametrize("rule, text", [
    ({"kind": "json"}, "```\n" + " \n" * 3000 + "x"),
    ({"kind": "format", "check": "answer_tags"}, "<answer>" * 20_000),
    ({"kind": "format", "check": "bullet_list"}, "\n" * 100_000),
    ({"kind": "format", "check": "numbered_list"}, "\n" * 100_000),
])
def test_it_checks_hostile_responses_in_linear_time(rule, text):
    # Python's `re` took 5 s to 50 s on each of these (quadratic or worse backtracking)
    result, seconds = _timed(compile_rule(RULE.validate_python(rule)), text)
    assert result == 0.0 and seconds < 1


def test_it_fails_json_nested_past_the_recursion_limit_instead_of_crashing():
    assert run({"kind": "json"}, "[" * 100_000 + "]" * 100_000) == 0.0
    assert run({"kind": "json", "schema": {"items": {"items": {}}}}, "[" * 5000 + "]" * 5000) == 0.0


@pytest.mark.parametrize("reader, name", [
    ("rlcore.training.specs:read_spec_file", "spec.yaml"),
    ("rlcore.judges.cli:read_templates", "templates.yaml"),
])
def test_it_refuses_yaml_aliases_in_every_file_reader(tmp_path, reader, name):
    # every YAML a person hands rlcore goes through rlcore.rubric.load_yaml, not yaml.safe_load
    import importlib

    from rlcore.errors import UserError
    from tests.rlcore.test_rubric import BILLION_LAUGHS

    module, function = reader.split(":")
    path = tmp_path / name
    path.write_text(BILLION_LAUGHS)
    with pytest.raises(UserError, match=r"aliases \(\*a\) are not allowed"):
        getattr(importlib.import_module(module), function)(path)


def test_it_bounds_math_answer_checks_in_a_thread_by_the_evaluation_deadline():
    # math-verify's own timeouts are SIGALRM (main thread only), and sympy expanding this power holds the GIL
    import threading

    from rlcore.rules import AnswerMatchRule, BudgetExceeded, evaluation_deadline

    check = compile_rule(AnswerMatchRule(kind="answer_match", reference_column="answer", mode="math"))
    out = {}

    def in_a_web_thread():
        with evaluation_deadline(20):
            out["half"] = check("so \\boxed{\\frac{1}{2}}", {"answer": "0.5"}, None)
        started = time.monotonic()
        try:
            with evaluation_deadline(1.0):
                check("\\boxed{9^{9^{9^{9}}}}", {"answer": "1"}, None)
        except BudgetExceeded as exc:
            out["stopped"] = (time.monotonic() - started, str(exc))
        with evaluation_deadline(20):  # the stuck helper was killed; a new one answers
            out["wrong"] = check("\\boxed{3}", {"answer": "2"}, None)

    thread = threading.Thread(target=in_a_web_thread)
    thread.start()
    thread.join(60)
    assert out["half"] == 1.0 and out["wrong"] == 0.0
    assert out["stopped"][0] < 2.0 and "time budget" in out["stopped"][1]
