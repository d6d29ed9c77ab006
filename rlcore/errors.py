"""Errors a user can cause and fix. The CLI prints them without a traceback; the webapp turns
them into form or API validation errors. Each message names what is wrong: file, line, field."""

from collections.abc import Callable, Container, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pydantic import ValidationError


class UserError(ValueError):
    """A problem in user input (a file, a spec, a field) with a message that says what to fix."""


def field_path(loc: Sequence[Any], *, skip: Container[str] = ()) -> str:
    """A pydantic error location as the field a user edits, in the one path style every layer uses
    (``skip``: parts left out, e.g. union tags).

    >>> field_path(("criteria", 1, "rule", "pattern")), field_path(("steps",)), field_path(())
    ('criteria[1].rule.pattern', 'steps', '')
    """
    out = ""
    for part in loc:
        if isinstance(part, str) and part in skip:
            continue
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def validation_message(source: str | Callable[[Sequence[Any]], str], exc: "ValidationError", *,
                       skip: Container[str] = (), limit: int = 10) -> str:
    """Every problem in a pydantic ValidationError as ``source: field 'path': message``, one a line; past ``limit``
    problems the rest are counted, not listed. ``source`` names the input (``file`` or ``file:line``), or is a
    function from a problem's location to that name, for inputs whose lines are found per field.

    >>> from pydantic import BaseModel, Field
    >>> class Criterion(BaseModel):
    ...     name: str
    ...     weight: float = Field(gt=0)
    >>> class Rubric(BaseModel):
    ...     criteria: list[Criterion]
    >>> try:
    ...     Rubric.model_validate({"criteria": [{"name": "a", "weight": 1}, {"weight": 0}]})
    ... except ValueError as exc:
    ...     print(validation_message("r.jsonl:3", exc))
    r.jsonl:3: field 'criteria[1].name': Field required
    r.jsonl:3: field 'criteria[1].weight': Input should be greater than 0
    >>> try:
    ...     Rubric.model_validate({"criteria": [{"weight": 0}] * 3})
    ... except ValueError as exc:
    ...     print(validation_message("r.json", exc, limit=2))
    r.json: field 'criteria[0].name': Field required
    r.json: field 'criteria[0].weight': Input should be greater than 0
    r.json: and 4 more problems
    """
    errors = exc.errors()
    lines = []
    for error in errors[:limit]:
        loc = [p for p in error["loc"] if not (isinstance(p, str) and p in skip)]
        where = source(loc) if callable(source) else source
        field = field_path(loc)
        lines.append(f"{where}: field {field!r}: {error['msg']}" if field else f"{where}: {error['msg']}")
    if len(errors) > limit:
        where = source(()) if callable(source) else source
        more = len(errors) - limit
        lines.append(f"{where}: and {more} more problem{'s' if more > 1 else ''}")
    return "\n".join(lines)
