"""Prompt category tags from an LM: the routing feature ``category=<name>`` for prompts whose import
metadata carries no category.

The user names the categories (``math, code, writing, safety, other``); each prompt is rendered into
a classification prompt, sent through any backend with ``complete(prompts) -> list[str | Exception]``
(:class:`~rlcore.judges.openai_compat.OpenAICompatJudge`, :class:`~rlcore.judges.local_hf.LocalHFJudge`),
and the reply is parsed leniently (case, punctuation, markdown, ``Category:`` or ``Categories:``).
A tag is never invented: a reply that names no listed category, names several when one was asked
for, or a call that failed gives the prompt no tag and a reason.

>>> cats = parse_categories("Math, code ,writing")
>>> cats
['math', 'code', 'writing']
>>> parse_tag_reply("Category: **Math**.", cats)
TagOutcome(tags=['math'], error=None)
>>> parse_tag_reply("I think this is about cooking.", cats).error
"the reply names none of the categories (math, code, writing): 'I think this is about cooking.'"
>>> parse_tag_reply("Categories: math, code", cats).error
'the reply names several categories (math, code) but one was asked for'
>>> parse_tag_reply("Categories: math and Code; poetry", cats, multi_label=True)
TagOutcome(tags=['math', 'code'], error=None)

:func:`tag_prompts` runs a backend over prompts, in order:

>>> class Scripted:
...     def complete(self, prompts):
...         return ["Category: code" if "Python" in p else RuntimeError("timed out") for p in prompts]
>>> [(r.id, r.tags, r.error) for r in tag_prompts(Scripted(), [("p1", "Fix my Python loop"), ("p2", "Hi")], cats)]
[('p1', ['code'], None), ('p2', [], 'the tagger call failed: timed out')]
"""

from __future__ import annotations

import re
from typing import Callable, NamedTuple, Protocol, Sequence

from pydantic import BaseModel, Field

from rlcore.errors import UserError

MAX_CATEGORIES = 50
_NAME = re.compile(r"^[a-z0-9][a-z0-9 _\-]{0,39}$")
_LINE = re.compile(r"^\W*categor(?:y|ies)\W*\s*[:=\-]\s*(.*)$", re.IGNORECASE)
_SPLIT = re.compile(r"\s*(?:,|;|/|\||\band\b|\n)\s*", re.IGNORECASE)
_EDGE = re.compile(r"^[\W_]+|[\W_]+$", re.UNICODE)

DEFAULT_TEMPLATE = """You sort user prompts into categories.

Categories: {categories}

{instruction}

[Prompt]
{prompt}
[End of prompt]

Answer with one line: "{answer_label}: <{answer_hint}>"."""


class TaggingBackend(Protocol):
    def complete(self, prompts: Sequence[str]) -> list[str | BaseException]: ...


class TagOutcome(NamedTuple):
    tags: list[str]
    error: str | None


class TagResult(BaseModel):
    """One prompt's tags, or no tag and why."""

    id: str = Field(description="the prompt's id, as given")
    tags: list[str] = Field(default_factory=list, description="categories named by the reply, in its order")
    error: str | None = Field(None, description="why the prompt got no tag (None when it has tags)")
    raw_reply: str | None = Field(None, description="what the model answered (None when the call failed)")


def _normalise(name: str) -> str:
    return " ".join(_EDGE.sub("", name.replace("*", "").replace("`", "")).lower().split())


def parse_categories(text: str | Sequence[str]) -> list[str]:
    """Category names from ``"math, code"`` or a list: lower-cased, de-duplicated, in order.

    >>> parse_categories(["Safety", "safety", "other"])
    ['safety', 'other']
    >>> parse_categories("math,,?")
    Traceback (most recent call last):
    ...
    rlcore.errors.UserError: categories: '?' is not a category name (letters, digits, space, - and _; up to 40)
    """
    items = text.split(",") if isinstance(text, str) else list(text)
    names: list[str] = []
    for item in items:
        raw = str(item).strip()
        if not raw:
            continue
        name = " ".join(raw.lower().split())
        if not _NAME.match(name):
            raise UserError(f"categories: {raw!r} is not a category name (letters, digits, space, - and _; up to 40)")
        if name not in names:
            names.append(name)
    if len(names) < 2:
        raise UserError("categories: give at least two category names, comma-separated (e.g. math,code,other)")
    if len(names) > MAX_CATEGORIES:
        raise UserError(f"categories: at most {MAX_CATEGORIES} categories (got {len(names)})")
    return names


def render_tag_prompt(prompt: str, categories: Sequence[str], *, multi_label: bool = False) -> str:
    """The classification prompt sent for one user prompt.

    >>> print(render_tag_prompt("2+2?", ["math", "other"]).splitlines()[2])
    Categories: math, other
    """
    if multi_label:
        instruction = "Name every category that fits the prompt below (one or more), comma-separated."
        label, hint = "Categories", "category>, <category"
    else:
        instruction = "Name the one category that fits the prompt below best."
        label, hint = "Category", "category"
    return DEFAULT_TEMPLATE.format(categories=", ".join(categories), instruction=instruction, prompt=prompt,
                                   answer_label=label, answer_hint=hint)


def parse_tag_reply(reply: str, categories: Sequence[str], *, multi_label: bool = False) -> TagOutcome:
    """The listed categories a reply names; the last ``Category:`` line wins, else the whole reply.

    Names outside the list are dropped (never turned into tags); no listed name at all is an error.
    """
    text = (reply or "").strip()
    if not text:
        return TagOutcome([], "the reply is empty")
    answer = text
    for line in text.splitlines():
        match = _LINE.match(line.strip())
        if match and match.group(1).strip():
            answer = match.group(1)
    known = {_normalise(c): c for c in categories}
    found: list[str] = []
    for part in _SPLIT.split(answer):
        name = known.get(_normalise(part))
        if name is not None and name not in found:
            found.append(name)
    if not found:
        shown = text if len(text) <= 120 else text[:117] + "..."
        return TagOutcome([], f"the reply names none of the categories ({', '.join(categories)}): {shown!r}")
    if len(found) > 1 and not multi_label:
        return TagOutcome([], f"the reply names several categories ({', '.join(found)}) but one was asked for")
    return TagOutcome(found, None)


def tag_prompts(backend: TaggingBackend, prompts: Sequence[tuple[str, str]], categories: Sequence[str], *,
                multi_label: bool = False, chunk: int = 64,
                progress: Callable[[int, int], None] | None = None) -> list[TagResult]:
    """Tag ``(id, prompt)`` pairs with ``backend``, ``chunk`` prompts per ``complete`` call, in order."""
    results: list[TagResult] = []
    for start in range(0, len(prompts), max(1, chunk)):
        part = prompts[start:start + max(1, chunk)]
        replies = backend.complete([render_tag_prompt(p, categories, multi_label=multi_label) for _, p in part])
        for (pid, _), reply in zip(part, replies):
            if isinstance(reply, BaseException):
                results.append(TagResult(id=pid, error=f"the tagger call failed: {reply}"))
                continue
            tags, error = parse_tag_reply(reply, categories, multi_label=multi_label)
            results.append(TagResult(id=pid, tags=tags, error=error, raw_reply=reply))
        if progress is not None:
            progress(len(results), len(prompts))
    return results


__all__ = ["TagOutcome", "TagResult", "parse_categories", "parse_tag_reply", "render_tag_prompt", "tag_prompts"]
