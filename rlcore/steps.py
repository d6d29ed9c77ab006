"""Steps of a response: how a response is split, and TRL's stepwise rows.

A split is data about a text, never a new text: each :class:`Step` keeps its character span in the
original response (``text[step.start:step.end] == step.text``), so the webapp stores the original
once and the split (rule + spans) beside it, versioned.

Rules (:class:`StepSplit`, one contract for forms, API bodies and specs):

- ``newline``: every line break ends a step; blank lines are not steps.
- ``blank_line``: a line holding only whitespace ends a step (paragraphs).
- ``step_header``: a step starts at each ``Step k:`` header (``Step 3.`` / ``step 3)`` too, any case,
  at the start of a line); the header belongs to its step. Text before the first header is a step
  of its own, so that nothing of the response falls outside the split.
- ``regex``: the user's ``pattern`` is the separator between steps, run with RE2 (linear time: a
  designer's pattern cannot stall a worker).

Steps are stripped of surrounding whitespace; empty pieces are dropped. A split that yields fewer
than ``min_steps`` or more than ``max_steps`` steps is refused with the count, naming row and field.

>>> rule = StepSplit(kind="newline")
>>> [(s.index, s.text, s.start, s.end) for s in split_steps("a = 2\\n\\nso b = 4", rule)]
[(0, 'a = 2', 0, 5), (1, 'so b = 4', 7, 15)]
>>> [s.text for s in split_steps("Think.\\nStep 1: add\\nmore\\nStep 2: done", StepSplit(kind="step_header"))]
['Think.', 'Step 1: add\\nmore', 'Step 2: done']
>>> split_steps("just one", rule, row=4, field="response")
Traceback (most recent call last):
...
rlcore.steps.StepError: row 4, field 'response': the newline separator yields 1 step; at least 2 are needed (min_steps) — choose a separator that occurs in the text

TRL's stepwise-supervision rows (``prompt``, ``completions`` — a list of steps — and ``labels``, one
bool per step) are read by :func:`read_stepwise_row` and written by :func:`stepwise_row`.
"""

from __future__ import annotations

from dataclasses import dataclass, field as dataclass_field
from functools import lru_cache
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from rlcore.errors import UserError

#: A hard ceiling on ``max_steps``: a split into more steps than this is a wrong separator, not data.
STEP_CAP = 4096
#: How the steps of a TRL stepwise row are joined into one response text (TRL's PRM formulation
#: puts a separator after each step; "\n" is its default ``step_separator``).
STEPWISE_JOINER = "\n"

_HEADER = r"(?im)^[ \t]*step[ \t]*\d+[ \t]*[:.)]"
_BUILTIN = {"newline": r"\n", "blank_line": r"\n[ \t]*\n"}


class StepError(UserError):
    """A split or a stepwise row that cannot be used; the message names row and field."""


class StepSplit(BaseModel):
    """How a response is cut into steps (see the module docstring for each kind)."""

    model_config = ConfigDict(extra="forbid")

    kind: Literal["newline", "blank_line", "step_header", "regex"] = Field(
        "newline", description="newline, blank_line, step_header ('Step k:'), or regex (the pattern separates steps)")
    pattern: str | None = Field(None, description="RE2 pattern of the separator; only (and required) for kind=regex")
    min_steps: int = Field(2, ge=1, le=STEP_CAP,
                           description="fewer steps than this means the separator does not occur: refused")
    max_steps: int = Field(256, ge=1, le=STEP_CAP,
                           description="more steps than this means the separator is too fine: refused")

    @model_validator(mode="after")
    def _check(self) -> StepSplit:
        if self.kind == "regex":
            if not self.pattern:
                raise ValueError("pattern: a regex split needs a pattern (the separator between steps)")
            try:
                _compile(self.pattern)
            except Exception as exc:  # re2.error carries bytes
                raise ValueError(f"pattern: RE2 cannot compile this pattern: {_re2_message(exc)} (look-arounds "
                                 "and backreferences are not supported)") from None
        elif self.pattern is not None:
            raise ValueError(f"pattern: only a regex split takes a pattern (kind is {self.kind!r})")
        if self.min_steps > self.max_steps:
            raise ValueError(f"min_steps ({self.min_steps}) is above max_steps ({self.max_steps})")
        return self

    def describe(self) -> str:
        return f"regex {self.pattern!r}" if self.kind == "regex" else self.kind.replace("_", " ")


@dataclass(frozen=True)
class Step:
    """One step: its position in the response and its span there (``text == original[start:end]``)."""

    index: int
    text: str
    start: int
    end: int


def split_steps(text: str, rule: StepSplit, *, row: int | str | None = None, field: str = "response") -> list[Step]:
    """Cut ``text`` into steps by ``rule``; refuse a split with too few or too many steps."""
    if rule.kind == "step_header":
        starts = sorted({m.start() for m in _builtin(_HEADER).finditer(text)})
        cuts = [(0, 0)] + [(s, s) for s in starts]  # headers start steps: zero-width cuts before them
    else:
        pattern = _compile(rule.pattern) if rule.kind == "regex" else _builtin(_BUILTIN[rule.kind])
        cuts = [(0, 0)] + [(m.start(), m.end()) for m in pattern.finditer(text)]
    pieces = []
    for (_, begin), (end, next_begin) in zip(cuts, cuts[1:] + [(len(text), len(text))]):
        if end < begin:  # RE2 reports a zero-width match twice at some positions
            continue
        pieces.append((begin, end))
    steps: list[Step] = []
    for begin, end in pieces:
        chunk = text[begin:end]
        stripped = chunk.strip()
        if not stripped:
            continue
        start = begin + (len(chunk) - len(chunk.lstrip()))
        steps.append(Step(len(steps), stripped, start, start + len(stripped)))
    if len(steps) > rule.max_steps:
        raise StepError(f"{_where(row, field)}: the {rule.describe()} separator yields {len(steps)} steps, more "
                        f"than max_steps={rule.max_steps} — choose a coarser separator")
    if len(steps) < rule.min_steps:
        count = f"{len(steps)} step" + ("" if len(steps) == 1 else "s")
        raise StepError(f"{_where(row, field)}: the {rule.describe()} separator yields {count}; at least "
                        f"{rule.min_steps} are needed (min_steps) — choose a separator that occurs in the text")
    return steps


def steps_from_list(parts: list[str], *, joiner: str = STEPWISE_JOINER) -> tuple[str, list[Step]]:
    """Steps given as a list (TRL stepwise ``completions``): the response is the steps joined by
    ``joiner``, and each step's span points into that text. Steps are kept exactly (not stripped),
    so that export reproduces them.

    >>> text, steps = steps_from_list(["x = 1", "y = 2"])
    >>> text, [(s.start, s.end) for s in steps]
    ('x = 1\\ny = 2', [(0, 5), (6, 11)])
    """
    steps, at = [], 0
    for index, part in enumerate(parts):
        steps.append(Step(index, part, at, at + len(part)))
        at += len(part) + len(joiner)
    return joiner.join(parts), steps


# ---------------------------------------------------------------- TRL stepwise rows


@dataclass
class StepwiseRow:
    """A TRL stepwise-supervision row: ``prompt``, its ``steps`` and one label per step (``None`` when
    the row is unlabelled). Other columns are kept in ``metadata`` so that export restores them."""

    prompt: str
    steps: list[str]
    labels: list[bool] | None = None
    metadata: dict[str, Any] = dataclass_field(default_factory=dict)

    @property
    def first_error(self) -> int | None:
        """Index of the first step labelled bad, or ``None`` when every step is good (or unlabelled)."""
        return next((i for i, good in enumerate(self.labels or []) if not good), None)


def read_stepwise_row(record: dict[str, Any], *, row: int | str, max_steps: int = STEP_CAP) -> StepwiseRow:
    """Read one TRL stepwise row; refuse, naming row and field, what a PRM could not learn from.

    >>> read_stepwise_row({"prompt": "1+1?", "completions": ["1+1=2", "so 2"], "labels": [True, True]}, row=1).labels
    [True, True]
    >>> read_stepwise_row({"prompt": "1+1?", "completions": ["1+1=2", "so 2"], "labels": [True]}, row=9)
    Traceback (most recent call last):
    ...
    rlcore.steps.StepError: row 9, field 'labels': 1 label for 2 steps; give one label per step
    """
    if not isinstance(record, dict):
        raise StepError(f"{_where(row, 'prompt')}: expected an object with prompt, completions and labels")
    prompt = record.get("prompt")
    if not isinstance(prompt, str):
        raise StepError(f"{_where(row, 'prompt')}: expected text, got {_kind(prompt)}")
    parts = record.get("completions")
    if not isinstance(parts, list) or not parts:
        raise StepError(f"{_where(row, 'completions')}: expected a non-empty list of steps, got {_kind(parts)}")
    if len(parts) > max_steps:
        raise StepError(f"{_where(row, 'completions')}: {len(parts)} steps, more than the cap of {max_steps}")
    for index, part in enumerate(parts):
        if not isinstance(part, str) or not part.strip():
            raise StepError(f"{_where(row, 'completions')}: step {index + 1} is "
                            f"{'empty' if isinstance(part, str) else _kind(part)}; every step must be text")
    labels = record.get("labels")
    if labels is not None:
        if not isinstance(labels, list):
            raise StepError(f"{_where(row, 'labels')}: expected a list with one label per step, got {_kind(labels)}")
        if len(labels) != len(parts):
            noun = "label" if len(labels) == 1 else "labels"
            raise StepError(f"{_where(row, 'labels')}: {len(labels)} {noun} for {len(parts)} steps; "
                            "give one label per step")
        for index, label in enumerate(labels):
            # 0/1 are accepted for bools (files written by pandas); anything else is ambiguous.
            if not (isinstance(label, bool) or (isinstance(label, int) and label in (0, 1))):
                raise StepError(f"{_where(row, 'labels')}: label {index + 1} is {label!r}; use true (good) or "
                                "false (bad)")
        labels = [bool(label) for label in labels]
    metadata = {k: v for k, v in record.items() if k not in ("prompt", "completions", "labels")}
    return StepwiseRow(prompt, list(parts), labels, metadata)


def stepwise_row(row: StepwiseRow) -> dict[str, Any]:
    """The TRL stepwise record of ``row`` (inverse of :func:`read_stepwise_row`)."""
    record: dict[str, Any] = {"prompt": row.prompt, "completions": list(row.steps)}
    if row.labels is not None:
        record["labels"] = list(row.labels)
    record.update(row.metadata)
    return record


def _where(row: int | str | None, field: str) -> str:
    # a str row is already a place ("labels.jsonl:7" from a snapshot reader)
    if isinstance(row, str):
        return f"{row}, field {field!r}"
    return f"row {row}, field {field!r}" if row is not None else f"field {field!r}"


def _kind(value: Any) -> str:
    return "nothing" if value is None else type(value).__name__


def _re2_message(exc: Exception) -> str:
    arg = exc.args[0] if exc.args else exc
    return arg.decode(errors="replace") if isinstance(arg, bytes) else str(arg)


@lru_cache(maxsize=None)
def _builtin(pattern: str):
    """Our own fixed patterns run on Python's re: they are linear there too (no nested repetition), and RE2's
    wrapper maps byte offsets back to characters in Python per match, which cost a GRPO step's process reward
    about a tenth of the PRM's forward (bench/process_reward.py). A user's pattern always runs on RE2."""
    import re

    return re.compile(pattern)


@lru_cache(maxsize=256)
def _compile(pattern: str):
    import re2

    options = re2.Options()
    options.log_errors = False
    return re2.compile(pattern, options)
