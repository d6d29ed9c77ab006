from collections.abc import Callable, Container, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

from django import forms
from django.contrib import messages
from django.core.exceptions import ValidationError
from django.http import HttpRequest

from rlcore.errors import field_path


def apply_service_errors(form: forms.Form, exc: ValidationError) -> None:
    """Show a service's ValidationError on the form field it names (or on the form)."""
    for field, field_messages in (exc.message_dict if hasattr(exc, "error_dict") else {None: exc.messages}).items():
        for message in field_messages:
            form.add_error(field if field in form.fields else None, message)


@contextmanager
def service_errors_on(form: forms.Form) -> Iterator[None]:
    """A ValidationError the block raises goes onto the form (:func:`apply_service_errors`) and the block ends.

    The page's success (a message, a redirect) goes inside the block, after the service call; what follows
    the block renders the form again with its errors.
    """
    try:
        yield
    except ValidationError as exc:
        apply_service_errors(form, exc)


@contextmanager
def service_errors_as_messages(request: HttpRequest) -> Iterator[None]:
    """A ValidationError the block raises becomes one error message per line and the block ends: for a
    button without a form, whose page is shown again (a redirect after the block) with the messages."""
    try:
        yield
    except ValidationError as exc:
        for message in exc.messages:
            messages.error(request, message)


def pydantic_errors(errors: Iterable[Mapping[str, Any]], *, prefix: str = "", skip: Container[str] = (),
                    root: str = "__all__", field: str | None = None,
                    owner: Callable[[Sequence[Any]], str] | None = None) -> ValidationError:
    """pydantic's error list (``exc.errors()``) as the ValidationError a service raises: {field: [messages]}.

    The one translation from pydantic's ``{"type", "loc", "msg"}`` to our ``{field: message}``, with one path
    style (``criteria[1].rule.pattern``, rlcore's :func:`~rlcore.errors.field_path`), used by every service
    that validates with rlcore's contracts and by the API for ninja's own request validation.

    ``prefix``: put before every path (``reward_spec.``); ``skip``: location parts left out (union tags);
    ``root``: the field of an error about the whole value; ``field``: every error under this one field, its
    path leading the message (a value typed into one input); ``owner(loc)``: who the error is about in the
    user's words (``criterion 'polite'``), leading the message.

    >>> pydantic_errors([{"type": "extra_forbidden", "loc": ("criteria", 0, "wieght"), "msg": "Extra inputs"},
    ...                  {"type": "value_error", "loc": (), "msg": "Value error, give one"}]).message_dict
    {'criteria[0].wieght': ['unknown field; remove it (check the spelling)'], '__all__': ['give one']}
    """
    out: dict[str, list[str]] = {}
    for error in errors:
        loc = error.get("loc", ())
        path = field_path(loc, skip=skip)
        message = ("unknown field; remove it (check the spelling)" if error.get("type") == "extra_forbidden"
                   else str(error.get("msg", "invalid value")).removeprefix("Value error, "))
        if field is not None:
            key, message = field, (f"{path}: {message}" if path else message)
        else:
            key = prefix + (path or root)
        who = owner(loc) if owner is not None else ""
        out.setdefault(key, []).append(f"{who}: {message}" if who else message)
    return ValidationError(out)


def error_list(exc: ValidationError, *, root: str = "__all__") -> list[dict[str, str]]:
    """A ValidationError as ``[{"field", "message"}]`` in the order raised: the API's 422 body, and the lines
    a page lists."""
    if hasattr(exc, "error_dict"):
        return [{"field": f, "message": m} for f, ms in exc.message_dict.items() for m in ms]
    return [{"field": root, "message": m} for m in exc.messages]
