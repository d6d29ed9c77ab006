"""The rubric editor's form: posted fields named by contract path (``criteria[1].rule.pattern``) to a rubric
definition and back.

The form posts strings; this module turns them into the JSON rlcore validates, collecting the errors it can
see itself (a weight that is not a number, a schema that is not JSON) under the same field names rlcore
uses, so every error lands next to the input it is about.
"""

from __future__ import annotations

import json
import re
from typing import Any, get_args

from rlcore import rules
from rlcore.rubric import Criterion, Rubric

# How the editor's rule-kind menu words each of rlcore's kinds; a kind rlcore adds shows under its own name.
_KIND_LABELS = {
    "regex": "regex must / must not match",
    "contains": "contains text",
    "not_contains": "does not contain text",
    "length": "length bounds",
    "json": "valid JSON (optional schema)",
    "answer_match": "answer matches a reference column",
    "format": "format check",
}
RULE_KINDS = [("", "no rule: graded by an LM judge"), *((k, _KIND_LABELS.get(k, k)) for k in rules.RULE_KINDS)]
FORMAT_CHECKS = list(rules.FORMAT_CHECKS)
# How the editor words the values of the contracts' other menus; a value rlcore adds shows as itself.
_VALUE_LABELS = {"any": "any occurs", "all": "all occur", "chars": "characters", "math": "math (symbolic)",
                 "exact": "exact text", "weighted_mean": "weighted mean",
                 "saturating": "saturating (diminishing returns)"}


def _menu(model, field: str) -> list[tuple[str, str, bool]]:
    """(value, label, is the default) for each value a Literal field of a contract allows."""
    default = model.model_fields[field].default
    return [(v, _VALUE_LABELS.get(v, v), v == default) for v in get_args(model.model_fields[field].annotation)]


MENUS = {"aggregation": _menu(Rubric, "aggregation"), "contains_mode": _menu(rules.ContainsRule, "mode"),
         "length_unit": _menu(rules.LengthRule, "unit"), "answer_match_mode": _menu(rules.AnswerMatchRule, "mode")}
_INDEX = re.compile(r"^criteria\[(\d+)\]\.name$")

# Which form inputs each rule kind has (besides kind): its contract's fields, by the names a user writes.
RULE_FIELDS = {kind: [f.alias or name for name, f in model.model_fields.items() if name != "kind"]
               for kind, model in zip(rules.RULE_KINDS, rules.union_members(rules.Rule))}


def _fields_typed(kind: type) -> set[str]:
    """The names of the contracts' fields of type ``kind`` (``int | None`` counts as int): how a posted
    string is read."""
    return {f.alias or name for model in (*rules.union_members(rules.Rule), Criterion, Rubric)
            for name, f in model.model_fields.items() if f.annotation is kind or kind in get_args(f.annotation)}


_BOOLEANS, _INTS, _FLOATS = _fields_typed(bool), _fields_typed(int), _fields_typed(float)
# A new criterion's inputs, as the editor shows them: the contract's defaults.
_CRITERION_DEFAULTS = {name: Criterion.model_fields[name].default
                       for name in ("weight", "critical", "veto_cap", "pass_threshold", "scale_min", "scale_max")}


def blank_criterion(n: int) -> dict[str, Any]:
    return {"name": f"criterion_{n}", "description": "", **_criterion_inputs({}),
            "rule": {"kind": "regex", "pattern": "", "must_match": True}}


def _criterion_inputs(values) -> dict[str, Any]:
    """A criterion's number and check-box inputs as the editor shows them, the contract's default where
    ``values`` (a definition or a post, by name) has none."""
    return {name: bool(values.get(name, default)) if isinstance(default, bool)
            else _num_text(values.get(name, default)) for name, default in _CRITERION_DEFAULTS.items()}


def _rubric_default(name: str) -> Any:
    return Rubric.model_fields[name].default


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
        criteria.append({"name": c.get("name", ""), "description": c.get("description", ""), **_criterion_inputs(c),
                         "rule": rule})
    return {"name": definition.get("name", ""), "description": definition.get("description", ""),
            "aggregation": definition.get("aggregation", _rubric_default("aggregation")),
            "saturation": _num_text(definition.get("saturation", _rubric_default("saturation"))), "criteria": criteria}


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
        inputs = {name: post[p + name] for name in _CRITERION_DEFAULTS if p + name in post}
        criteria.append({"name": post.get(p + "name", ""), "description": post.get(p + "description", ""),
                         **_criterion_inputs(inputs), "critical": (p + "critical") in post, "rule": rule})
    return {"name": post.get("name", ""), "description": post.get("description", ""),
            "aggregation": post.get("aggregation", _rubric_default("aggregation")),
            "saturation": post.get("saturation", _num_text(_rubric_default("saturation"))), "criteria": criteria}


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
