"""From stored or posted JSON to rlcore's contracts, and from rlcore's problems to Django ValidationErrors.

The contracts themselves (``rlcore.rubric.Rubric``, ``rlcore.rewards.RewardSpec``) and every check on
them live in rlcore; this module only names each problem by the field a user edits
(``criteria[1].rule.pattern``) and says which criterion or component it belongs to.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import yaml
from django.core.exceptions import ValidationError
from pydantic import ValidationError as PydanticValidationError

from rlcore.rewards import RewardSpec as SpecContract
from rlcore.rewards import check_spec
from rlcore.rubric import Rubric as RubricContract
from rlcore.rubric import check_rubric
from rlcore.rules import Problem, union_tags
from webapp.forms_util import pydantic_errors


def _owner(definition: Any):
    """Who a pydantic error is about, in the user's words: the criterion or component it is in."""
    def owner(loc: Sequence[Any]) -> str:
        if isinstance(definition, dict) and len(loc) >= 2 and loc[0] in ("criteria", "components") \
                and isinstance(loc[1], int):
            items = definition.get(loc[0])
            item = items[loc[1]] if isinstance(items, list) and loc[1] < len(items) else None
            noun = "criterion" if loc[0] == "criteria" else "component"
            name = item.get("name") if isinstance(item, dict) else None
            return f"{noun} {name!r}" if name else f"{noun} {loc[1] + 1}"
        return ""
    return owner


def _validated(contract, definition: Any):
    try:
        return contract.model_validate(definition)
    except PydanticValidationError as exc:
        raise pydantic_errors(exc.errors(), skip=union_tags(contract), root="definition",
                              owner=_owner(definition)) from None


def _problem_errors(problems: Iterable[Problem]) -> dict[str, list[str]]:
    errors: dict[str, list[str]] = {}
    for p in problems:
        errors.setdefault(p.field, []).append(f"{p.where}: {p.message}")
    return errors


def parse_rubric(definition: Any, dataset_columns: Iterable[str] | None = None) -> RubricContract:
    """A valid rlcore Rubric from JSON data, or ValidationError {field: [message naming the criterion]}.

    ``dataset_columns``: when given, every reference column an answer-match rule reads must be one of them.
    """
    if not isinstance(definition, dict):
        raise ValidationError({"definition": "a rubric is an object with 'name' and 'criteria'"})
    rubric = _validated(RubricContract, definition)
    problems = check_rubric(rubric)
    if dataset_columns is not None:
        columns = set(dataset_columns)
        for i, criterion in enumerate(rubric.criteria):
            column = getattr(criterion.rule, "reference_column", None)
            if column is not None and column not in columns:
                problems.append(Problem(where=f"criterion {criterion.name!r}", field=f"criteria[{i}].rule.reference_column",
                                        message=f"column {column!r} is not in the dataset "
                                                f"(columns: {', '.join(sorted(columns))})"))
    if problems:
        raise ValidationError(_problem_errors(problems))
    return rubric


def parse_spec(definition: Any, dataset_columns: Iterable[str] | None = None) -> SpecContract:
    """A valid rlcore RewardSpec (rubrics inlined), or ValidationError {field: [message]}.

    ``dataset_columns``: the columns the project's datasets have; every column the spec reads must be one.
    """
    if not isinstance(definition, dict):
        raise ValidationError({"definition": "a reward spec is an object with 'name' and 'components'"})
    spec = _validated(SpecContract, definition)
    problems = check_spec(spec, dataset_columns)
    if problems:
        raise ValidationError(_problem_errors(problems))
    return spec


def load_yaml_document(text: str, *, source: str = "YAML") -> Any:
    """Parse YAML (JSON is YAML too); a syntax error names the line."""
    from rlcore.rubric import load_yaml

    try:
        return load_yaml(text)
    except RecursionError:
        raise ValidationError({"yaml": f"{source}: nested too deeply to read"}) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f", line {mark.line + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise ValidationError({"yaml": f"{source}{line}: not valid YAML ({problem})"}) from None


def with_lines(exc: ValidationError, text: str, *, source: str = "YAML") -> ValidationError:
    """The same errors, each prefixed with the line of the field in the YAML text it came from."""
    from rlcore.rubric import line_of

    if not hasattr(exc, "error_dict"):
        return exc
    out: dict[str, list[str]] = {}
    for field, messages in exc.message_dict.items():
        line = line_of(text, _loc_of(field))
        where = f"{source}, line {line}" if line else source
        out[field] = [f"{where}: {m}" for m in messages]
    return ValidationError(out)


def _loc_of(field: str) -> list[Any]:
    """'components[0].rubric.criteria[1].rule.pattern' -> ['components', 0, 'rubric', 'criteria', 1, 'rule', 'pattern']."""
    loc: list[Any] = []
    for part in field.replace("[", ".[").split("."):
        if not part or part == "[*]":
            continue
        if part.startswith("[") and part.endswith("]"):
            inner = part[1:-1]
            if inner.isdigit():
                loc.append(int(inner))
            continue
        loc.append(part)
    return loc


def dump_yaml(data: Any) -> str:
    return yaml.safe_dump(data, sort_keys=False, allow_unicode=True)
