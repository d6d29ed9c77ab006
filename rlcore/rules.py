"""Rule checks: criteria a response meets or fails without any model.

A rule is a small pydantic model (what a user writes in a rubric, tagged by ``kind``); :func:`compile_rule`
turns it once into a plain function ``check(text, row, n_tokens) -> float | None`` that returns 1.0 (met) or
0.0 (failed), or None where it does not apply (no reference answer for that row). Compiled checks do no
pydantic work and no pattern compilation per call, so a rubric scores tens of thousands of responses a second.

User patterns run on RE2 (``google-re2``): matching is linear in the text, so no pattern can backtrack
catastrophically; RE2 refuses look-arounds and back-references, and :func:`rule_problems` says so at save time.

>>> check = compile_rule(RegexRule(kind="regex", pattern=r"\\bplease\\b", ignore_case=True))
>>> check("Please sit.", {}, None), check("Sit.", {}, None)
(1.0, 0.0)
>>> compile_rule(LengthRule(kind="length", max=3, unit="words"))("one two three four", {}, None)
0.0
>>> compile_rule(AnswerMatchRule(kind="answer_match", reference_column="answer", mode="numeric"))(
...     "so the total is \\\\boxed{1,250}", {"answer": "1250.0"}, None)
1.0
>>> [p.message for p in rule_problems(RegexRule(kind="regex", pattern="(?<=a)b"))]
['RE2 cannot compile this pattern: invalid perl operator: (?<= (look-arounds and back-references are not supported by the safe regex engine)']
"""

from __future__ import annotations

import json
import math
import os
import re
import select
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from functools import lru_cache
from pathlib import Path
import types
from typing import Annotated, Any, Literal, Union, get_args, get_origin

from pydantic import BaseModel, ConfigDict, Field

RuleCheck = Callable[[str, Mapping[str, Any], "int | None"], "float | None"]


class Problem(BaseModel):
    """One thing wrong with a rubric or reward spec, saying where and what to fix."""

    model_config = ConfigDict(frozen=True)

    where: str = Field(description="the criterion or component at fault, e.g. \"criterion 'no_urls'\"")
    field: str = Field(description="the field to fix, as a dotted path, e.g. 'rule.pattern'")
    message: str = Field(description="what is wrong and how to fix it")

    def __str__(self) -> str:
        return f"{self.where}, field {self.field!r}: {self.message}"


# ---------------------------------------------------------------- rule models


class _Rule(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class RegexRule(_Rule):
    """The response must (or must not) contain a match of a regular expression (RE2 syntax)."""

    kind: Literal["regex"] = Field(description="rule type tag")
    pattern: str = Field(description="RE2 regular expression, searched anywhere in the response")
    must_match: bool = Field(True, description="True: met when it matches; False: met when it does not")
    ignore_case: bool = Field(False, description="match letters case-insensitively")
    multiline: bool = Field(False, description="^ and $ match at every line, not just the ends of the text")
    dot_all: bool = Field(False, description=". also matches a newline")


class ContainsRule(_Rule):
    """The response contains the given texts (any or all of them)."""

    kind: Literal["contains"] = Field(description="rule type tag")
    texts: list[str] = Field(min_length=1, description="literal texts to look for")
    mode: Literal["any", "all"] = Field("any", description="met when any / all of the texts occur")
    case_sensitive: bool = Field(False, description="compare letter case exactly")


class NotContainsRule(_Rule):
    """The response contains none of the given texts."""

    kind: Literal["not_contains"] = Field(description="rule type tag")
    texts: list[str] = Field(min_length=1, description="literal texts that must not occur")
    case_sensitive: bool = Field(False, description="compare letter case exactly")


class LengthRule(_Rule):
    """The response's length lies within bounds."""

    kind: Literal["length"] = Field(description="rule type tag")
    min: int | None = Field(None, ge=0, description="shortest allowed length, inclusive; None: no lower bound")
    max: int | None = Field(None, ge=0, description="longest allowed length, inclusive; None: no upper bound")
    unit: Literal["chars", "words", "tokens"] = Field(
        "chars",
        description="what is counted; 'tokens' uses the completion's token ids when the trainer passes them, "
        "and whitespace-separated words otherwise",
    )


class JsonRule(_Rule):
    """The response is valid JSON, optionally valid against a JSON Schema."""

    kind: Literal["json"] = Field(description="rule type tag")
    json_schema: dict[str, Any] | None = Field(None, alias="schema", description="a JSON Schema the value must satisfy")
    allow_code_fence: bool = Field(True, description="accept the JSON inside one ```json ... ``` fenced block")

    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True, serialize_by_alias=True)


class AnswerMatchRule(_Rule):
    """The response's final answer equals the reference answer in a dataset column."""

    kind: Literal["answer_match"] = Field(description="rule type tag")
    reference_column: str = Field(description="dataset column holding the reference answer")
    mode: Literal["exact", "numeric", "math"] = Field(
        "math",
        description="'exact': normalised text equality; 'numeric': numbers equal within tolerance; 'math': "
        "symbolic equivalence with math-verify (numeric comparison when math-verify is not installed)",
    )
    tolerance: float = Field(1e-6, ge=0, description="relative tolerance for numeric comparison")


FormatCheck = Literal[
    "think_answer_tags", "answer_tags", "boxed_answer", "starts_with", "ends_with", "bullet_list", "numbered_list",
    "no_urls", "no_code_block", "single_paragraph",
]


class FormatRule(_Rule):
    """A common format check by name."""

    kind: Literal["format"] = Field(description="rule type tag")
    check: FormatCheck = Field(
        description="think_answer_tags: '<think>…</think><answer>…</answer>' and nothing else; answer_tags: one "
        "'<answer>…</answer>'; boxed_answer: contains '\\\\boxed{…}'; starts_with / ends_with: the stripped text "
        "starts / ends with `value`; bullet_list / numbered_list: at least two list lines; no_urls; no_code_block; "
        "single_paragraph: no blank line"
    )
    value: str | None = Field(None, description="the text for starts_with / ends_with")


Rule = Annotated[
    RegexRule | ContainsRule | NotContainsRule | LengthRule | JsonRule | AnswerMatchRule | FormatRule,
    Field(discriminator="kind"),
]


def union_members(union: Any) -> tuple[type[BaseModel], ...]:
    """The models of a tagged union such as :data:`Rule` (its ``Annotated`` wrapper looked through)."""
    if get_origin(union) is Annotated:
        union = get_args(union)[0]
    return tuple(m for m in get_args(union) if isinstance(m, type) and issubclass(m, BaseModel))


def union_kinds(union: Any) -> tuple[str, ...]:
    """The ``kind`` tags of a tagged union, in declaration order: the one list of what a user may choose.

    >>> union_kinds(Rule)
    ('regex', 'contains', 'not_contains', 'length', 'json', 'answer_match', 'format')
    """
    return tuple(get_args(m.model_fields["kind"].annotation)[0] for m in union_members(union))


@lru_cache(maxsize=None)
def union_tags(model: type[BaseModel]) -> frozenset[str]:
    """Every ``kind`` tag of the tagged unions a contract holds, at any depth. pydantic puts the tag in an
    error's location (``criteria.1.rule.regex.pattern``); a field path leaves it out.

    >>> from rlcore.rubric import Rubric
    >>> sorted(union_tags(Rubric))
    ['answer_match', 'contains', 'format', 'json', 'length', 'not_contains', 'regex']
    """
    tags: set[str] = set()
    seen: set[type] = set()
    todo: list[Any] = [model]
    while todo:
        t = todo.pop()
        if isinstance(t, type) and issubclass(t, BaseModel):
            if t not in seen:
                seen.add(t)
                todo.extend(f.annotation for f in t.model_fields.values())
            continue
        args = get_args(t)
        members = [a for a in args if isinstance(a, type) and issubclass(a, BaseModel) and "kind" in a.model_fields]
        if get_origin(t) in (Union, types.UnionType) and len(members) > 1:
            tags.update(union_kinds(t))
        todo.extend(a for a in args if not isinstance(a, str))
    return frozenset(tags)


RULE_KINDS = union_kinds(Rule)
FORMAT_CHECKS: tuple[str, ...] = get_args(FormatCheck)


# ---------------------------------------------------------------- validation


def rule_problems(rule: Rule, where: str = "rule", prefix: str = "") -> list[Problem]:
    """Everything wrong with a rule that would otherwise fail in the middle of scoring."""
    out: list[Problem] = []

    def problem(field: str, message: str) -> None:
        out.append(Problem(where=where, field=f"{prefix}{field}", message=message))

    if isinstance(rule, RegexRule):
        try:
            _compile_re2(rule)
        except Exception as exc:  # re2.error carries bytes
            problem("pattern", f"RE2 cannot compile this pattern: {_re2_message(exc)} (look-arounds and "
                               "back-references are not supported by the safe regex engine)")
    elif isinstance(rule, (ContainsRule, NotContainsRule)):
        for i, text in enumerate(rule.texts):
            if not text:
                problem(f"texts[{i}]", "empty text matches everything; remove it")
    elif isinstance(rule, LengthRule):
        if rule.min is None and rule.max is None:
            problem("min", "give min, max or both")
        elif rule.min is not None and rule.max is not None and rule.min > rule.max:
            problem("max", f"max ({rule.max}) is below min ({rule.min})")
    elif isinstance(rule, JsonRule) and rule.json_schema is not None:
        from jsonschema import exceptions, validators

        try:
            validators.validator_for(rule.json_schema).check_schema(rule.json_schema)
        except exceptions.SchemaError as exc:
            at = "/".join(str(p) for p in exc.absolute_path)
            problem("schema", f"not a valid JSON Schema{f' (at /{at})' if at else ''}: {exc.message}")
        else:
            for at, message in schema_pattern_problems(rule.json_schema):
                problem("schema", f"at {at}: {message}")
    elif isinstance(rule, AnswerMatchRule) and not rule.reference_column.strip():
        problem("reference_column", "name the dataset column that holds the reference answer")
    elif isinstance(rule, FormatRule) and rule.check in ("starts_with", "ends_with") and not rule.value:
        problem("value", f"{rule.check} needs the text to look for in 'value'")
    return out


def _re2_message(exc: Exception) -> str:
    arg = exc.args[0] if exc.args else exc
    return arg.decode(errors="replace") if isinstance(arg, bytes) else str(arg)


def _compile_re2(rule: RegexRule):
    import re2

    options = re2.Options()
    options.log_errors = False
    flags = "".join(f for f, on in (("i", rule.ignore_case), ("m", rule.multiline), ("s", rule.dot_all)) if on)
    return re2.compile(f"(?{flags}){rule.pattern}" if flags else rule.pattern, options)


@lru_cache(maxsize=1024)
def _re2(pattern: str):
    import re2

    options = re2.Options()
    options.log_errors = False
    return re2.compile(pattern, options)


# ---------------------------------------------------------------- JSON Schema patterns on RE2
#
# jsonschema matches `pattern`, `patternProperties` (and, through them, `additionalProperties`) with Python's
# backtracking `re`: `^(a+)+$` against 30 characters takes minutes. The validator class below replaces those
# keywords with RE2 versions. `unevaluatedProperties` looks at `patternProperties` through jsonschema's own
# `re` calls, so schemas that combine the two are refused (schema_pattern_problems) rather than run.

_NOT_SCHEMAS = ("enum", "const", "default", "examples")  # values here are data, not subschemas


def _schema_patterns(schema: Any, at: str = "") -> list[tuple[str, str]]:
    """``(JSON pointer, pattern)`` for every ``pattern`` and ``patternProperties`` key in a schema."""
    out: list[tuple[str, str]] = []
    if isinstance(schema, list):
        for i, item in enumerate(schema):
            out += _schema_patterns(item, f"{at}/{i}")
    elif isinstance(schema, dict):
        for key, value in schema.items():
            if key == "pattern" and isinstance(value, str):
                out.append((f"{at}/pattern", value))
            elif key == "patternProperties" and isinstance(value, dict):
                out += [(f"{at}/patternProperties/{name}", name) for name in value]
            if key not in _NOT_SCHEMAS:
                out += _schema_patterns(value, f"{at}/{key}")
    return out


def _schema_has(schema: Any, keyword: str) -> bool:
    if isinstance(schema, list):
        return any(_schema_has(item, keyword) for item in schema)
    if isinstance(schema, dict):
        return any(key == keyword or (key not in _NOT_SCHEMAS and _schema_has(value, keyword))
                   for key, value in schema.items())
    return False


def schema_pattern_problems(schema: Any) -> list[tuple[str, str]]:
    """``(where, message)`` for each pattern in a JSON Schema that the safe (RE2) engine cannot run.

    >>> schema_pattern_problems({"properties": {"a": {"pattern": "(?=x)"}}})
    [('/properties/a/pattern', 'RE2 cannot compile this pattern: invalid perl operator: (?= (look-arounds and back-references are not supported by the safe regex engine)')]
    """
    out = []
    for at, pattern in _schema_patterns(schema):
        try:
            _re2(pattern)
        except Exception as exc:  # re2.error carries bytes
            out.append((at, f"RE2 cannot compile this pattern: {_re2_message(exc)} (look-arounds and "
                            "back-references are not supported by the safe regex engine)"))
    if _schema_has(schema, "unevaluatedProperties") and _schema_has(schema, "patternProperties"):
        out.append(("/unevaluatedProperties", "unevaluatedProperties cannot be combined with patternProperties "
                                              "here (the safe regex engine does not cover it); use "
                                              "additionalProperties next to patternProperties instead"))
    return out


def _re2_pattern(validator, pattern, instance, schema):
    from jsonschema.exceptions import ValidationError

    if validator.is_type(instance, "string") and _re2(pattern).search(instance) is None:
        yield ValidationError(f"{instance!r} does not match {pattern!r}")


def _re2_pattern_properties(validator, pattern_properties, instance, schema):
    if not validator.is_type(instance, "object"):
        return
    for pattern, subschema in pattern_properties.items():
        search = _re2(pattern).search
        for key, value in instance.items():
            if search(key) is not None:
                yield from validator.descend(value, subschema, path=key, schema_path=pattern)


def _re2_additional_properties(validator, additional, instance, schema):
    from jsonschema.exceptions import ValidationError

    if not validator.is_type(instance, "object"):
        return
    properties = schema.get("properties", {})
    searches = [_re2(p).search for p in schema.get("patternProperties", {})]
    extras = [key for key in instance
              if key not in properties and not any(search(key) is not None for search in searches)]
    if validator.is_type(additional, "object"):
        for extra in extras:
            yield from validator.descend(instance[extra], additional, path=extra)
    elif not additional and extras:
        yield ValidationError(f"Additional properties are not allowed ({', '.join(map(repr, sorted(extras)))} "
                              f"{'was' if len(extras) == 1 else 'were'} unexpected)")


def schema_validator(schema: dict[str, Any]):
    """A jsonschema validator for ``schema`` whose patterns all run on RE2 (linear time).

    >>> validator = schema_validator({"type": "string", "pattern": "^(a+)+$"})
    >>> validator.is_valid("a" * 29 + "!"), validator.is_valid("aaa")
    (False, True)
    """
    from jsonschema import validators

    base = validators.validator_for(schema)
    safe = validators.extend(base, {"pattern": _re2_pattern, "patternProperties": _re2_pattern_properties,
                                    "additionalProperties": _re2_additional_properties})
    return safe(schema)


# ---------------------------------------------------------------- compilation


def compile_rule(rule: Rule) -> RuleCheck:
    """Turn a rule into a fast check function. The rule must be free of problems (see rule_problems)."""
    if isinstance(rule, RegexRule):
        search = _compile_re2(rule).search
        if rule.must_match:
            return lambda text, row, n_tokens: 1.0 if search(text) is not None else 0.0
        return lambda text, row, n_tokens: 0.0 if search(text) is not None else 1.0
    if isinstance(rule, (ContainsRule, NotContainsRule)):
        return _compile_contains(rule)
    if isinstance(rule, LengthRule):
        return _compile_length(rule)
    if isinstance(rule, JsonRule):
        return _compile_json(rule)
    if isinstance(rule, AnswerMatchRule):
        column, matches = rule.reference_column, answer_matcher(rule.mode, rule.tolerance)

        def check_answer(text: str, row: Mapping[str, Any], n_tokens: int | None) -> float | None:
            reference = row.get(column)
            if reference is None or (isinstance(reference, str) and not reference.strip()):
                return None
            return 1.0 if matches(text, reference) else 0.0

        return check_answer
    if isinstance(rule, FormatRule):
        return _compile_format(rule)
    raise TypeError(f"unknown rule {rule!r}")


def _compile_contains(rule: ContainsRule | NotContainsRule) -> RuleCheck:
    texts = tuple(rule.texts if rule.case_sensitive else (t.lower() for t in rule.texts))
    fold = (lambda s: s) if rule.case_sensitive else str.lower
    found = all if isinstance(rule, ContainsRule) and rule.mode == "all" else any

    def check_contains(text: str, row: Mapping[str, Any], n_tokens: int | None) -> float:
        folded = fold(text)
        return 1.0 if found([t in folded for t in texts]) else 0.0

    if isinstance(rule, NotContainsRule):
        return lambda text, row, n: 1.0 - check_contains(text, row, n)
    return check_contains


def _compile_length(rule: LengthRule) -> RuleCheck:
    low = rule.min if rule.min is not None else 0
    high = rule.max if rule.max is not None else math.inf
    if rule.unit == "chars":
        return lambda text, row, n: 1.0 if low <= len(text) <= high else 0.0
    if rule.unit == "words":
        return lambda text, row, n: 1.0 if low <= len(text.split()) <= high else 0.0
    return lambda text, row, n: 1.0 if low <= (len(text.split()) if n is None else n) <= high else 0.0


# RE2, not `re`: with Python's backtracking engine this took seconds on a response of 2,000 blank lines
_FENCE_PATTERN = r"(?s)\A\s*```[A-Za-z0-9_-]*\s*\n(.*?)\n\s*```\s*\z"


def _compile_json(rule: JsonRule) -> RuleCheck:
    validator = schema_validator(rule.json_schema) if rule.json_schema is not None else None
    allow_fence = rule.allow_code_fence

    def check_json(text: str, row: Mapping[str, Any], n_tokens: int | None) -> float:
        body = text
        if allow_fence and "```" in text and (fenced := _re2(_FENCE_PATTERN).match(text)):
            body = fenced.group(1)
        try:
            value = json.loads(body)
            # a value nested past Python's recursion limit is not JSON a reader of the response can use
            return 0.0 if validator is not None and not validator.is_valid(value) else 1.0
        except (ValueError, RecursionError):
            return 0.0

    return check_json


_THINK_ANSWER = re.compile(r"\s*<think>(?:(?!<think>).)*?</think>\s*<answer>(?:(?!<answer>).)*?</answer>\s*", re.DOTALL)
# These three run on RE2: on a response of 20,000 unclosed '<answer>' tags or 100,000 blank lines Python's `re`
# took 12 s and 40 s (quadratic backtracking). RE2's \s and \d are ASCII, which is what list markers use.
_ANSWER_TAG = _re2(r"(?s)<answer>(.*?)</answer>")
_BULLET_LINE = _re2(r"(?m)^\s*[-*•]\s+\S")
_NUMBERED_LINE = _re2(r"(?m)^\s*\d+[.)]\s+\S")
_URL = re.compile(r"(?i)\b(?:https?://|ftp://|www\.)\S")
_BLANK_LINE = re.compile(r"\n\s*\n")


def think_answer_format(text: str) -> bool:
    """``<think>…</think>`` then ``<answer>…</answer>``, only whitespace around; no ``<think>`` inside the
    thinking, no ``<answer>`` inside the answer. (The same as ``_THINK_ANSWER.fullmatch``, without a regex.)

    >>> think_answer_format(" <think>a</think>\\n<answer>b</answer>\\n"), think_answer_format("<answer>b</answer>")
    (True, False)
    """
    t = text.strip()
    if not (t.startswith("<think>") and t.endswith("</answer>")):
        return False
    j = t.rfind("<answer>")
    if j < 0 or j + len("<answer>") > len(t) - len("</answer>"):
        return False
    head = t[:j].rstrip()
    return (head.endswith("</think>") and len(head) >= len("<think></think>")
            and "<think>" not in head[len("<think>"):-len("</think>")])


def _compile_format(rule: FormatRule) -> RuleCheck:
    check, value = rule.check, rule.value or ""
    if check == "think_answer_tags":
        return lambda text, row, n: 1.0 if think_answer_format(text) else 0.0
    if check == "answer_tags":
        return lambda text, row, n: 1.0 if len(_ANSWER_TAG.findall(text)) == 1 else 0.0
    if check == "boxed_answer":
        return lambda text, row, n: 1.0 if _last_boxed(text) is not None else 0.0
    if check == "starts_with":
        return lambda text, row, n: 1.0 if text.lstrip().startswith(value) else 0.0
    if check == "ends_with":
        return lambda text, row, n: 1.0 if text.rstrip().endswith(value) else 0.0
    if check == "bullet_list":
        return lambda text, row, n: 1.0 if len(_BULLET_LINE.findall(text)) >= 2 else 0.0
    if check == "numbered_list":
        return lambda text, row, n: 1.0 if len(_NUMBERED_LINE.findall(text)) >= 2 else 0.0
    if check == "no_urls":  # the substring test skips the regex for the many texts with no URL at all
        return lambda text, row, n: (0.0 if ("://" in text or "www." in text.lower()) and _URL.search(text) else 1.0)
    if check == "no_code_block":
        return lambda text, row, n: 0.0 if "```" in text else 1.0
    if check == "single_paragraph":
        return lambda text, row, n: 0.0 if _BLANK_LINE.search(text.strip()) else 1.0
    raise TypeError(f"unknown format check {check!r}")


# ---------------------------------------------------------------- answers


def _last_boxed(text: str) -> str | None:
    """Content of the last ``\\boxed{...}`` with balanced braces.

    >>> _last_boxed(r"first \\boxed{1} then \\boxed{\\frac{1}{2}}")
    '\\\\frac{1}{2}'
    """
    start = text.rfind("\\boxed{")
    if start < 0:
        return None
    depth, i = 0, start + len("\\boxed")
    for j in range(i, len(text)):
        if text[j] == "{":
            depth += 1
        elif text[j] == "}":
            depth -= 1
            if depth == 0:
                return text[i + 1:j]
    return None


_ANSWER_IS = re.compile(r"(?i)(?:final answer|answer)\s*(?:is\s*:?|:)\s*(.+)")


def extract_answer(text: str) -> str:
    """The final answer of a response: last ``\\boxed{}``, else ``<answer>`` tag, else 'answer is/:' line, else all.

    >>> extract_answer("<think>hmm</think><answer> 42 </answer>"), extract_answer("The answer is: Paris.")
    ('42', 'Paris.')
    """
    if (boxed := _last_boxed(text)) is not None:
        return boxed.strip()
    if tags := _ANSWER_TAG.findall(text):
        return tags[-1].strip()
    if lines := _ANSWER_IS.findall(text):
        return lines[-1].strip()
    return text.strip()


_NUMBER_TOKEN = re.compile(r"[-+]?(?:\d{1,3}(?:,\d{3})+(?:\.\d+)?|\d*\.?\d+)(?:[eE][-+]?\d+)?(?:\s*/\s*\d+)?%?")
_FRAC = re.compile(r"\\[dt]?frac\{([-+]?[\d.]+)\}\{([-+]?[\d.]+)\}")


def parse_number(text: str) -> float | None:
    """The last number in a text: '1,250', '-3.5', '1/4', '50%', '\\frac{1}{2}'; None when there is none.

    >>> parse_number("about 1,250 apples"), parse_number("1/4"), parse_number("\\\\frac{3}{4}"), parse_number("x")
    (1250.0, 0.25, 0.75, None)
    """
    text = _FRAC.sub(lambda m: f"{m.group(1)}/{m.group(2)}", text.replace("$", ""))
    tokens = _NUMBER_TOKEN.findall(text)
    if not tokens:
        return None
    token = tokens[-1].replace(",", "").replace(" ", "")
    percent = token.endswith("%")
    token = token.rstrip("%")
    try:
        if "/" in token:
            num, den = token.split("/")
            value = float(num) / float(den)
        else:
            value = float(token)
    except (ValueError, ZeroDivisionError):
        return None
    return value / 100.0 if percent else value


def _normalise(text: str) -> str:
    return " ".join(text.strip().strip(".").strip().lower().split())


def _numbers_equal(a: float, b: float, tolerance: float) -> bool:
    return math.isclose(a, b, rel_tol=tolerance, abs_tol=tolerance)


def answer_matcher(mode: str, tolerance: float = 1e-6) -> Callable[[str, Any], bool]:
    """A function ``matches(response, reference) -> bool`` for an answer-match mode.

    >>> answer_matcher("exact")("Answer: Paris.", "paris"), answer_matcher("numeric")("it is 0.5", "1/2")
    (True, True)
    """

    def exact(response: str, reference: Any) -> bool:
        return _normalise(extract_answer(response)) == _normalise(str(reference))

    def numeric(response: str, reference: Any) -> bool:
        want = float(reference) if isinstance(reference, (int, float)) else parse_number(str(reference))
        got = parse_number(extract_answer(response))
        return want is not None and got is not None and _numbers_equal(got, want, tolerance)

    if mode == "exact":
        return exact
    if mode == "numeric":
        return numeric

    def math_match(response: str, reference: Any) -> bool:
        verified = _math_verify(response, str(reference))
        if verified is None:  # math-verify missing or could not read the reference
            return numeric(response, reference) or exact(response, reference)
        return verified

    return math_match


@lru_cache(maxsize=4096)
def _gold(reference: str):
    from math_verify import parse

    return parse(f"${reference}$" if "$" not in reference and "\\boxed" not in reference else reference,
                 parsing_timeout=_timeout())


MATH_VERIFY_SECONDS = 5  # per parse or comparison, as math-verify's own default


def _timeout() -> int | None:
    # math-verify's timeouts use SIGALRM, which exists only in the main thread
    return MATH_VERIFY_SECONDS if threading.current_thread() is threading.main_thread() else None


def _math_verify_here(response: str, reference: str) -> bool | None:
    try:
        from math_verify import parse, verify
    except ImportError:
        return None
    gold = _gold(reference)
    if not gold:
        return None
    answer = parse(response, parsing_timeout=_timeout())
    if not answer:
        return False
    return bool(verify(gold, answer, timeout_seconds=_timeout()))


def _math_verify(response: str, reference: str) -> bool | None:
    """math-verify's verdict, never running longer than its own timeouts (or the evaluation deadline).

    Its timeouts are SIGALRM, which only the main thread can use; in any other thread (a web request) the
    work goes to a helper process that is killed when it overruns (as it does under an evaluation deadline,
    which a whole-second alarm cannot keep). A thread cannot be stopped, and sympy expanding
    ``9^{9^{9^{9}}}`` holds the GIL, which would freeze every thread of the web process.
    """
    if threading.current_thread() is threading.main_thread() and _DEADLINE.get() is None:
        return _math_verify_here(response, reference)
    return _MATH_VERIFY_HELPER.verify(response, reference)


# ---------------------------------------------------------------- time budgets


class BudgetExceeded(Exception):
    """The evaluation deadline (see :func:`evaluation_deadline`) passed while a check was running."""


_DEADLINE: ContextVar[float | None] = ContextVar("rlcore_evaluation_deadline", default=None)


@contextmanager
def evaluation_deadline(seconds: float):
    """Checks run inside stop at ``time.monotonic() + seconds``: a bounded one (math-verify in a helper
    process) raises BudgetExceeded instead of waiting past it. Yields the deadline (a monotonic time) so the
    caller can stop between responses too.

    >>> with evaluation_deadline(0.5) as deadline:
    ...     0 < deadline - time.monotonic() <= 0.5
    True
    """
    deadline = time.monotonic() + seconds
    token = _DEADLINE.set(deadline)
    try:
        yield deadline
    finally:
        _DEADLINE.reset(token)


def _serve_math_verify() -> None:
    """The helper process: one JSON request per line in, one verdict per line out (main thread: signals work)."""
    for line in sys.stdin:
        request = json.loads(line)
        try:
            verdict = _math_verify_here(request["response"], request["reference"])
        except Exception:  # noqa: BLE001 - a verdict math-verify cannot reach is no verdict
            verdict = False
        sys.stdout.write(json.dumps({"verdict": verdict}) + "\n")
        sys.stdout.flush()


class _MathVerifyHelper:
    """One helper process per web process, started on first use, one request at a time (a lock)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._process: subprocess.Popen | None = None
        self._buffer = b""

    def _start(self) -> subprocess.Popen:
        if self._process is None or self._process.poll() is not None:
            root = str(Path(__file__).resolve().parent.parent)
            env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")]))}
            self._process = subprocess.Popen(
                [sys.executable, "-c", "from rlcore.rules import _serve_math_verify; _serve_math_verify()"],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env)
            self._buffer = b""
        return self._process

    def _kill(self) -> None:
        if self._process is not None:
            self._process.kill()
            self._process.wait()
            self._process = None

    def verify(self, response: str, reference: str) -> bool | None:
        deadline = _DEADLINE.get()
        # the helper answers within its own timeouts (parse and verify, plus a start of under a second);
        # past that it is stuck where a signal cannot reach (a huge integer power) and is killed
        limit = time.monotonic() + 3 * MATH_VERIFY_SECONDS
        wait_until = limit if deadline is None else min(limit, deadline)
        if not self._lock.acquire(timeout=max(0.0, wait_until - time.monotonic())):
            if deadline is not None:
                raise BudgetExceeded("the answer check was busy with other requests past the time budget")
            return False
        try:
            process = self._start()
            process.stdin.write((json.dumps({"response": response, "reference": reference}) + "\n").encode())
            process.stdin.flush()
            while b"\n" not in self._buffer:
                left = wait_until - time.monotonic()
                ready = select.select([process.stdout], [], [], max(0.0, left))[0] if left > 0 else []
                if not ready:
                    self._kill()
                    if deadline is not None and wait_until == deadline:
                        raise BudgetExceeded("the answer check ran past the time budget")
                    return False  # as math-verify answers a comparison that times out
                chunk = os.read(process.stdout.fileno(), 65536)
                if not chunk:  # the helper died (e.g. out of memory): no verdict
                    self._kill()
                    return False
                self._buffer += chunk
            line, self._buffer = self._buffer.split(b"\n", 1)
            return json.loads(line)["verdict"]
        finally:
            self._lock.release()


_MATH_VERIFY_HELPER = _MathVerifyHelper()
