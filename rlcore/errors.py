"""Errors a user can cause and fix. The CLI prints them without a traceback; the webapp turns
them into form or API validation errors. Each message names what is wrong: file, line, field."""

from collections.abc import Container, Sequence
from typing import Any


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
