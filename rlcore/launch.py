"""The part of a run's spec that a person chooses, apart from what whoever launches the run fills in.

A spec is its settings model plus the fields its launcher provides: ``GRPOTrainSpec`` is ``GRPOSettings`` (preset,
beta, batch sizes, ...) with the output folder, the prompt snapshot, the policy and the reward spec added. The
webapp's launch forms and REST bodies are the settings model itself, so they offer every setting with its
description, default and limits, refuse the launcher's fields, and are checked by the same validators the spec
file is checked by (those that need only settings live on the settings model, the spec inherits them).

>>> from pydantic import Field
>>> class StepSettings(LaunchSettings):
...     steps: int = Field(10, gt=0, description="how long")
>>> class StepSpec(StepSettings):
...     output: str = Field(description="where it writes")
>>> sorted(launcher_fields(StepSettings))
['output']
>>> StepSettings(steps=0, output="/etc")
Traceback (most recent call last):
...
pydantic_core._pydantic_core.ValidationError: 2 validation errors for StepSettings
steps
  Input should be greater than 0 ...
output
  output is filled in by whoever launches the run, not a setting: leave it out ...
>>> StepSpec(steps=3, output="o").steps
3
>>> from rlcore.training.specs import RewardModelSettings
>>> sorted(launcher_paths(RewardModelSettings))
['eval_snapshot', 'output_dir', 'preference_snapshot']
"""

from __future__ import annotations

import types
import typing
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError, ValidatorFunctionWrapHandler, model_validator
from pydantic_core import InitErrorDetails, PydanticCustomError


class LaunchSettings(BaseModel):
    """Base of a settings model; a spec subclasses its settings model and adds the launcher's fields."""

    model_config = ConfigDict(extra="forbid", protected_namespaces=())

    @model_validator(mode="wrap")
    @classmethod
    def _launcher_fields_named(cls, data: Any, handler: ValidatorFunctionWrapHandler) -> Any:
        # extra="forbid" refuses a launcher's field as an unknown one, which reads like a typo: say what it is,
        # at the same location, among the other errors.
        try:
            return handler(data)
        except ValidationError as exc:
            launched = launcher_fields(cls)
            errors = exc.errors()
            if not any(e["type"] == "extra_forbidden" and e["loc"] and e["loc"][-1] in launched for e in errors):
                raise
            raise ValidationError.from_exception_data(exc.title, [
                InitErrorDetails(type=PydanticCustomError(
                    "launcher_field", "{name} is filled in by whoever launches the run, not a setting: leave it out",
                    {"name": e["loc"][-1]}), loc=e["loc"], input=e["input"])
                if e["type"] == "extra_forbidden" and e["loc"] and e["loc"][-1] in launched else e
                for e in errors]) from None


def launcher_fields(settings: type[LaunchSettings]) -> frozenset[str]:
    """The fields the specs built on ``settings`` (its subclasses) add to it: what their launcher provides."""
    own = set(settings.model_fields)
    return frozenset(name for spec in settings.__subclasses__() for name in spec.model_fields if name not in own)


def launcher_paths(settings: type[LaunchSettings]) -> frozenset[str]:
    """The launcher's fields that are files or folders (``Path`` or ``Path | None``): each run has its own, so two
    runs differ in them by construction."""
    def is_path(annotation) -> bool:
        if typing.get_origin(annotation) in (typing.Union, types.UnionType):
            return Path in typing.get_args(annotation)
        return annotation is Path

    return frozenset(name for spec in settings.__subclasses__() for name, field in spec.model_fields.items()
                     if name in launcher_fields(settings) and is_path(field.annotation))
