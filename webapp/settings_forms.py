"""Forms whose fields are the settings of one of rlcore's launch settings models (rlcore.launch): each field's
label, default, type and help text come from the pydantic field, and the model checks the values once, so a
launch page, its REST body and the CLI accept exactly the same settings."""

from __future__ import annotations

import types
import typing
from typing import Any, Literal

from django import forms
from pydantic import BaseModel
from pydantic import ValidationError as PydanticValidationError
from rlcore.launch import LaunchSettings

from webapp.forms_util import pydantic_errors


def _unwrap_optional(annotation) -> tuple[Any, bool]:
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        return (args[0] if len(args) == 1 else annotation), True
    return annotation, False


def spec_form_field(model, name: str, *, note: str = "", blank: str = "(default)") -> forms.Field:
    """The form field of setting ``name`` of ``model`` (``block__field``: a field of an optional nested block): its
    label, default, limits' type and description (``note`` added) come from the pydantic field. An optional choice
    offers ``blank``, which leaves the value to the model's default."""
    label = name.replace("__", " ").replace("_", " ").capitalize()
    block_optional = False
    if "__" in name:  # a field of a nested block (dhpo__mixing): blank leaves the whole block out
        block, name = name.split("__", 1)
        model, block_optional = _unwrap_optional(model.model_fields[block].annotation)
    info = model.model_fields[name]
    annotation, optional = _unwrap_optional(info.annotation)
    optional = optional or block_optional
    default = info.get_default(call_default_factory=True)
    kwargs = {"required": info.is_required() and not block_optional, "help_text": (info.description or "") + note,
              "label": label}
    if default is not None and not isinstance(default, type(...)) and not block_optional:
        kwargs["initial"] = default
    blank = "(off)" if block_optional else blank
    if optional and typing.get_origin(annotation) is Literal:
        return forms.ChoiceField(choices=[("", blank)] + [(v, v) for v in typing.get_args(annotation)], **kwargs)
    if optional and annotation is bool:
        return forms.NullBooleanField(widget=forms.Select(choices=[("unknown", blank), ("true", "yes"),
                                                                   ("false", "no")]), **kwargs)
    if typing.get_origin(annotation) is list and typing.get_origin(typing.get_args(annotation)[0]) is Literal:
        choices = typing.get_args(typing.get_args(annotation)[0])  # e.g. report_to: list[Literal[...]]
        return forms.MultipleChoiceField(choices=[(v, v) for v in choices], widget=forms.CheckboxSelectMultiple,
                                         **kwargs)
    if typing.get_origin(annotation) is Literal:
        return forms.ChoiceField(choices=[(v, v) for v in typing.get_args(annotation)], **kwargs)
    if annotation is bool:
        return forms.BooleanField(**kwargs)
    if annotation is int:
        return forms.IntegerField(**kwargs)
    if annotation is float:
        return forms.FloatField(**kwargs)
    return forms.CharField(**kwargs)


def settings_field_names(model: type[LaunchSettings]) -> list[str]:
    """The form field of every setting of ``model``: the ones its own class declares first (the run's own, e.g.
    GRPO's preset and beta), then those it shares with other runs; an optional block (``dhpo``) is one field per
    setting of the block, ``block__field``."""
    seen: dict[str, None] = {}
    for owner in model.__mro__:  # most derived first
        for name in getattr(owner, "__annotations__", {}):
            if name in model.model_fields:
                seen.setdefault(name)
    names = []
    for name in seen:
        annotation, _ = _unwrap_optional(model.model_fields[name].annotation)
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            names += [f"{name}__{field}" for field in annotation.model_fields]
        else:
            names.append(name)
    return names


def settings_params(data: dict[str, Any], names: list[str]) -> dict[str, Any]:
    """The settings the user filled in; blanks fall back to the model's defaults. ``block__field`` names fill a
    nested block, which is sent only when one of its fields is filled in."""
    params: dict[str, Any] = {}
    for name in names:
        if name in data and data[name] not in (None, ""):
            block, _, field = name.rpartition("__")
            (params.setdefault(block, {}) if block else params)[field] = data[name]
    return params


class SettingsForm(forms.Form):
    """A launch form with one field per setting of ``settings_model`` (rlcore's, see rlcore.launch), checked by
    that model once: a valid form's ``cleaned_data["settings"]`` is the settings instance the service takes."""

    settings_model: type[LaunchSettings]

    def __init__(self, *args, project=None, **kwargs):  # project: for the forms whose choices are the project's
        super().__init__(*args, **kwargs)
        self.settings_names = settings_field_names(self.settings_model)
        for name in self.settings_names:
            self.fields[name] = self.setting_field(name)

    def setting_field(self, name: str) -> forms.Field:
        return spec_form_field(self.settings_model, name)

    def page_fields(self) -> list[forms.BoundField]:
        """The page's own fields (what to train on, the queue), before the settings."""
        return [self[name] for name in self.fields if name not in self.settings_names]

    def settings_sections(self) -> list[tuple[str, list[forms.BoundField]]]:
        """The settings fields grouped by the rlcore class that declares them, the run's own first, each headed by
        the first line of that class's docstring."""
        sections: dict[type, list[forms.BoundField]] = {}
        for name in self.settings_names:
            field = name.split("__")[0]
            owner = next(cls for cls in self.settings_model.__mro__ if field in getattr(cls, "__annotations__", {}))
            sections.setdefault(owner, []).append(self[name])
        return [((owner.__doc__ or owner.__name__).strip().splitlines()[0], fields)
                for owner, fields in sections.items()]

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean()
        try:
            cleaned["settings"] = self.settings_model.model_validate(settings_params(cleaned, self.settings_names))
        except PydanticValidationError as exc:
            for path, messages in pydantic_errors(exc.errors()).message_dict.items():
                name = path.replace(".", "__")
                for message in messages:
                    self.add_error(name if name in self.fields else None, message)
        return cleaned
