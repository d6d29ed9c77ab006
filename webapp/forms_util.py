from collections.abc import Container, Iterable, Mapping, Sequence
from typing import Any

from django import forms
from django.core.exceptions import ValidationError


def apply_service_errors(form: forms.Form, exc: ValidationError) -> None:
    """Show a service's ValidationError on the form field it names (or on the form)."""
    for field, messages in (exc.message_dict if hasattr(exc, "error_dict") else {None: exc.messages}).items():
        for message in messages:
            form.add_error(field if field in form.fields else None, message)


def field_path(loc: Sequence[Any], *, skip: Container[str] = ()) -> str:
    """A pydantic error location as the field name the services use (``skip``: parts left out, e.g. union tags).

    >>> field_path(("criteria", 1, "rule", "pattern")), field_path(("steps",)), field_path(())
    ('criteria[1].rule.pattern', 'steps', '')
    """
    out = ""
    for part in loc:
        if isinstance(part, str) and part in skip:
            continue
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def pydantic_errors(errors: Iterable[Mapping[str, Any]], *, prefix: str = "") -> ValidationError:
    """pydantic's error list (``exc.errors()``) as the ValidationError a service raises: {field: [messages]}.

    The one translation from pydantic's ``{"type", "loc", "msg"}`` to our ``{field: message}``, used by the
    services that validate with rlcore's contracts and by the API for ninja's own request validation.
    """
    out: dict[str, list[str]] = {}
    for error in errors:
        out.setdefault(prefix + (field_path(error["loc"]) or "__all__"), []).append(error["msg"])
    return ValidationError(out)
