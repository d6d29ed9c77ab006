"""The rubric editor's form: posted fields named by contract path (``criteria[1].rule.pattern``) to a rubric
definition and back.

The form posts strings; this module turns them into the JSON rlcore validates, collecting the errors it can
see itself (a weight that is not a number, a schema that is not JSON) under the same field names rlcore
uses, so every error lands next to the input it is about.
"""

from __future__ import annotations

import json
import re
from typing import Any

RULE_KINDS = [
    ("", "no rule: graded by an LM judge"),
    ("regex", "regex must / must not match"),
    ("contains", "contains text"),
    ("not_contains", "does not contain text"),
    ("length", "length bounds"),
    ("json", "valid JSON (optional schema)"),
    ("answer_match", "answer matches a reference column"),
    ("format", "format check"),
]
FORMAT_CHECKS = ["think_answer_tags", "answer_tags", "boxed_answer", "starts_with", "ends_with", "bullet_list",
                 "numbered_list", "no_urls", "no_code_block", "single_paragraph"]
_INDEX = re.compile(r"^criteria\[(\d+)\]\.name$")

# Which form inputs each rule kind has (besides kind).
RULE_FIELDS = {
    "regex": ["pattern", "must_match", "ignore_case", "multiline", "dot_all"],
    "contains": ["texts", "mode", "case_sensitive"],
    "not_contains": ["texts", "case_sensitive"],
    "length": ["min", "max", "unit"],
    "json": ["schema", "allow_code_fence"],
    "answer_match": ["reference_column", "mode", "tolerance"],
    "format": ["check", "value"],
}
_BOOLEANS = {"must_match", "ignore_case", "multiline", "dot_all", "case_sensitive", "allow_code_fence", "critical"}
_INTS = {"min", "max"}
_FLOATS = {"tolerance", "weight", "veto_cap", "pass_threshold", "scale_min", "scale_max", "saturation"}


def blank_criterion(n: int) -> dict[str, Any]:
    return {"name": f"criterion_{n}", "description": "", "weight": "1", "critical": False, "veto_cap": "0",
            "pass_threshold": "0.5", "scale_min": "0", "scale_max": "1",
            "rule": {"kind": "regex", "pattern": "", "must_match": True}}


def state_from_definition(definition: dict[str, Any]) -> dict[str, Any]:
    """A saved definition as the editor's form state (strings, as the inputs show them)."""
    criteria = []
    for c in definition.get("criteria", []):
        rule = dict(c.get("rule") or {"kind": ""})
        if "texts" in rule:
            rule["texts"] = "\n".join(rule["texts"])
        if rule.get("schema") is not None:
            rule["schema"] = json.dumps(rule["schema"], indent=1)
        for key in ("min", "max", "tolerance"):
            if key in rule and rule[key] is not None:
                rule[key] = _num_text(rule[key])
        criteria.append({
            "name": c.get("name", ""), "description": c.get("description", ""),
            "weight": _num_text(c.get("weight", 1)), "critical": bool(c.get("critical")),
            "veto_cap": _num_text(c.get("veto_cap", 0)), "pass_threshold": _num_text(c.get("pass_threshold", 0.5)),
            "scale_min": _num_text(c.get("scale_min", 0)), "scale_max": _num_text(c.get("scale_max", 1)),
            "rule": rule,
        })
    return {"name": definition.get("name", ""), "description": definition.get("description", ""),
            "aggregation": definition.get("aggregation", "weighted_mean"),
            "saturation": _num_text(definition.get("saturation", 3)), "criteria": criteria}


def _num_text(value: Any) -> str:
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return "" if value is None else str(value)


def state_from_post(post) -> dict[str, Any]:
    """The posted form as editor state (unvalidated), criteria in their on-screen order."""
    indices = sorted(int(m[1]) for key in post if (m := _INDEX.match(key)))
    criteria = []
    for i in indices:
        p = f"criteria[{i}]."
        kind = post.get(p + "rule.kind", "")
        rule: dict[str, Any] = {"kind": kind}
        for field in RULE_FIELDS.get(kind, []):
            key = p + "rule." + field
            rule[field] = (key in post and post.get(key) not in ("", "off", "false")) if field in _BOOLEANS \
                else post.get(key, "")
        criteria.append({
            "name": post.get(p + "name", ""), "description": post.get(p + "description", ""),
            "weight": post.get(p + "weight", "1"), "critical": (p + "critical") in post,
            "veto_cap": post.get(p + "veto_cap", "0"), "pass_threshold": post.get(p + "pass_threshold", "0.5"),
            "scale_min": post.get(p + "scale_min", "0"), "scale_max": post.get(p + "scale_max", "1"),
            "rule": rule,
        })
    return {"name": post.get("name", ""), "description": post.get("description", ""),
            "aggregation": post.get("aggregation", "weighted_mean"), "saturation": post.get("saturation", "3"),
            "criteria": criteria}


def apply_action(state: dict[str, Any], action: str) -> dict[str, Any]:
    """Add, remove or move a criterion: 'add', 'remove:<i>', 'up:<i>', 'down:<i>' (anything else: no change)."""
    criteria = state["criteria"]
    verb, _, index = action.partition(":")
    if verb == "add":
        criteria.append(blank_criterion(len(criteria) + 1))
        return state
    if not index.isdigit() or int(index) >= len(criteria):
        return state
    i = int(index)
    if verb == "remove":
        criteria.pop(i)
    elif verb == "up" and i > 0:
        criteria[i - 1], criteria[i] = criteria[i], criteria[i - 1]
    elif verb == "down" and i < len(criteria) - 1:
        criteria[i + 1], criteria[i] = criteria[i], criteria[i + 1]
    return state


def definition_from_state(state: dict[str, Any]) -> tuple[dict[str, Any], dict[str, list[str]]]:
    """(definition for rlcore, errors the form itself can see: numbers and JSON that do not parse)."""
    errors: dict[str, list[str]] = {}

    def number(value: str, field: str, who: str, kind=float):
        text = str(value).strip()
        if text == "":
            return None
        try:
            return kind(text)
        except ValueError:
            noun = "a whole number" if kind is int else "a number"
            errors.setdefault(field, []).append(f"{who}: '{text}' is not {noun}")
            return None

    criteria = []
    for i, c in enumerate(state["criteria"]):
        p = f"criteria[{i}]."
        who = f"criterion {c['name']!r}" if c["name"] else f"criterion {i + 1}"
        out: dict[str, Any] = {"name": c["name"].strip(), "description": c["description"].strip()}
        for field in ("weight", "veto_cap", "pass_threshold", "scale_min", "scale_max"):
            value = number(c[field], p + field, who)
            if value is not None:
                out[field] = value
        out["critical"] = bool(c["critical"])
        rule = c["rule"]
        kind = rule.get("kind", "")
        if kind:
            r: dict[str, Any] = {"kind": kind}
            for field in RULE_FIELDS.get(kind, []):
                value = rule.get(field)
                key = f"{p}rule.{field}"
                if field in _BOOLEANS:
                    r[field] = bool(value)
                elif field == "texts":
                    r[field] = [t.strip() for t in str(value or "").splitlines() if t.strip()]
                elif field == "schema":
                    text = str(value or "").strip()
                    if text:
                        try:
                            r["schema"] = json.loads(text)
                        except ValueError as exc:
                            errors.setdefault(key, []).append(
                                f"{who}: the JSON Schema is not valid JSON (line {exc.lineno}: {exc.msg})")
                elif field in _INTS or field in _FLOATS:
                    parsed = number(value or "", key, who, int if field in _INTS else float)
                    if parsed is not None:
                        r[field] = parsed
                elif field == "value":
                    if value:
                        r[field] = value
                elif value not in (None, ""):
                    r[field] = value
            out["rule"] = r
        criteria.append(out)
    definition: dict[str, Any] = {"name": state["name"].strip() or "untitled", "description": state["description"],
                                  "aggregation": state["aggregation"], "criteria": criteria}
    saturation = number(state["saturation"], "saturation", "rubric")
    if saturation is not None:
        definition["saturation"] = saturation
    return definition, errors


def blank_rule_fields(state: dict[str, Any]) -> dict[str, str]:
    """{field path: who} for each rule input still empty (e.g. a new criterion's pattern). While composing,
    an error about such a field only means "not typed yet"; saving still reports it."""
    blank = {}
    for i, c in enumerate(state["criteria"]):
        for field in RULE_FIELDS.get(c["rule"].get("kind", ""), []):
            if field not in _BOOLEANS and str(c["rule"].get(field) or "").strip() == "":
                blank[f"criteria[{i}].rule.{field}"] = c["name"] or f"criterion {i + 1}"
    return blank


def errors_by_criterion(errors: dict[str, list[str]], count: int) -> tuple[dict[int, list[tuple[str, str]]], list[tuple[str, str]]]:
    """Split {field: [messages]} into each criterion's (field, message) pairs and the rest (rubric-wide)."""
    per: dict[int, list[tuple[str, str]]] = {i: [] for i in range(count)}
    rest: list[tuple[str, str]] = []
    for field, messages in errors.items():
        m = re.match(r"^criteria\[(\d+)\]\.?(.*)$", field)
        for message in messages:
            if m and int(m[1]) in per:
                per[int(m[1])].append((m[2] or "criterion", message))
            else:
                rest.append((field, message))
    return per, rest
