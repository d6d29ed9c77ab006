"""Turn a raw record into prompt + responses (+ labels), or say exactly what is wrong with it.

Accepted shapes (columns other than the ones named here are kept as metadata):

- **prompt + responses**: ``prompt`` (text or chat messages) and any of ``responses`` (a list),
  ``response`` / ``completion``, or numbered columns ``response_1``, ``response_a`` ... Each
  response is text, chat messages, or an object ``{"text" | "content", "model", ...}``.
  A prompt with no responses is fine (prompts for GRPO).
- **TRL preference rows**: ``chosen`` and ``rejected`` (text or messages), with ``prompt``
  (explicit prompt) or without (implicit prompt: the shared leading messages).
- **chat transcripts**: ``messages`` (list of ``{role, content}``); a final assistant turn is
  the response, everything before it the prompt.

Rows written by :mod:`rlcore.datasets.trl_export` carry provenance columns (``label_id``,
``source``, ``annotator`` ...); consecutive rows of one ``comparison_id`` are merged back into
one prompt, its responses and every label, so that export followed by import preserves labels.

>>> row = normalize_record({"prompt": "2+2?", "responses": ["4", {"text": "5", "model": "tiny"}],
...                         "topic": "math"}, line=7)
>>> row.prompt_text, [r.text for r in row.responses], row.responses[1].model_name, row.metadata
('2+2?', ['4', '5'], 'tiny', {'topic': 'math'})
>>> normalize_record({"prompt": "hi", "responses": ["ok", ""]}, line=3)
Traceback (most recent call last):
...
rlcore.datasets.readers.RowError: line 3: response 2 is empty
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from rlcore.datasets.readers import MAX_NESTING, RowError, SourceError

ROLES = ("system", "user", "assistant", "tool", "developer")
PROVENANCE_COLUMNS = ("label_id", "comparison_id", "source", "annotator", "annotator_id", "model_version",
                      "display_order", "labeled_at", "strength", "choice", "rationale", "criterion_scores",
                      "chosen_position", "rejected_position", "ranking", "margin", "tie", "provenance")
_RESPONSE_COLUMN = re.compile(r"^(response|completion)(_\w+)?$")


@dataclass
class ImportedResponse:
    text: str
    messages: list[dict[str, str]] | None = None
    model_name: str = ""
    metadata: dict[str, Any] = field(default_factory=dict)


@dataclass
class ImportedLabel:
    """A label carried by exported preference rows. `choice` / `ranking` use response positions
    (indexes into the row's `responses`)."""

    label_id: str
    choice: str                 # "a" | "b" | "tie" | "ranking"
    ranking: list[int] | None
    strength: int
    source: str                 # "human" | "lm"
    annotator: str
    model_version: str
    display_order: list[int]
    labeled_at: str
    rationale: str
    criterion_scores: dict[str, Any]
    provenance: dict[str, Any]


@dataclass
class ImportedRow:
    line: int
    prompt_text: str
    prompt_messages: list[dict[str, str]] | None
    responses: list[ImportedResponse]
    metadata: dict[str, Any]
    labels: list[ImportedLabel] = field(default_factory=list)
    comparison_key: str | None = None


def render_messages(messages: list[dict[str, str]]) -> str:
    """Plain-text form of a chat, for search, previews and text-only consumers.

    >>> render_messages([{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}])
    'user: Hi\\n\\nassistant: Hello'
    """
    return "\n\n".join(f"{m['role']}: {m['content']}" for m in messages)


def _maybe_json(value: Any) -> Any:
    """A CSV cell's list or object, given as JSON text; anything else, or JSON nested deeper than a row may
    be (MAX_NESTING), stays the text it is, so the column's own check names the line.

    >>> _maybe_json('["a", "b"]'), _maybe_json("[not json"), _maybe_json("[" * 100 + "]" * 100)[:3]
    (['a', 'b'], '[not json', '[[[')
    """
    if isinstance(value, str) and value[:1] in ("[", "{"):
        try:
            parsed = json.loads(value)
        except (json.JSONDecodeError, RecursionError):
            return value
        return value if _deeper_than(parsed, MAX_NESTING) else parsed
    return value


def _deeper_than(value: Any, limit: int) -> bool:
    stack = [(value, 1)]
    while stack:  # iterative: a deep value must not exhaust the stack here
        item, depth = stack.pop()
        if depth > limit:
            return True
        if isinstance(item, dict):
            stack.extend((child, depth + 1) for child in item.values())
        elif isinstance(item, list):
            stack.extend((child, depth + 1) for child in item)
    return False


def _messages(value: Any, line: int, what: str) -> list[dict[str, str]]:
    if not value:
        raise RowError(line, f"{what} is an empty list of messages")
    out = []
    for i, m in enumerate(value, 1):
        if not isinstance(m, dict) or "role" not in m or "content" not in m:
            raise RowError(line, f"{what}: message {i} must be an object with 'role' and 'content'")
        if m["role"] not in ROLES:
            raise RowError(line, f"{what}: message {i} has role {m['role']!r}; use one of {', '.join(ROLES)}")
        content = m["content"]
        if isinstance(content, list):  # multimodal-style parts: keep the text parts
            content = "".join(p.get("text", "") for p in content if isinstance(p, dict))
        if not isinstance(content, str):
            raise RowError(line, f"{what}: message {i} content must be text, got {type(content).__name__}")
        out.append({"role": m["role"], "content": content})
    return out


def _text_or_messages(value: Any, line: int, what: str) -> tuple[str, list[dict[str, str]] | None]:
    value = _maybe_json(value)
    if value is None:
        raise RowError(line, f"{what} is missing (empty or null)")
    if isinstance(value, str):
        if not value.strip():
            raise RowError(line, f"{what} is empty")
        return value, None
    if isinstance(value, list):
        messages = _messages(value, line, what)
        text = render_messages(messages)
        if not any(m["content"].strip() for m in messages):
            raise RowError(line, f"{what} is empty")
        return text, messages
    raise RowError(line, f"{what} must be text or a list of chat messages, got {type(value).__name__}")


def _response(value: Any, line: int, what: str) -> ImportedResponse:
    value = _maybe_json(value)
    if isinstance(value, dict) and "role" not in value:
        body = value.get("text", value.get("content"))
        if body is None:
            raise RowError(line, f"{what} is an object without 'text' or 'content'")
        text, messages = _text_or_messages(body, line, what)
        model = value.get("model", value.get("model_name", "")) or ""
        meta = {k: _jsonable(v) for k, v in value.items() if k not in ("text", "content", "model", "model_name")}
        return ImportedResponse(text, messages, str(model), meta)
    if isinstance(value, list) and value and all(isinstance(m, dict) and "role" in m for m in value):
        messages = _messages(value, line, what)
        # a completion is the assistant's part; show just its content as text
        text = "\n\n".join(m["content"] for m in messages) if all(m["role"] == "assistant" for m in messages) \
            else render_messages(messages)
        if not text.strip():
            raise RowError(line, f"{what} is empty")
        return ImportedResponse(text, messages)
    text, messages = _text_or_messages(value, line, what)
    return ImportedResponse(text, messages)


def _jsonable(value: Any) -> Any:
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if hasattr(value, "tolist"):
        return _jsonable(value.tolist())
    if hasattr(value, "isoformat"):
        return value.isoformat()
    return str(value)


def check_columns(columns: Iterable[str], name: str) -> None:
    """A file with a header (CSV, Parquet, HF) must have a column of one of the accepted shapes.

    >>> check_columns(["question", "answer"], "qa.csv")
    Traceback (most recent call last):
    ...
    rlcore.datasets.readers.SourceError: qa.csv has no 'prompt', 'messages', 'conversations' or 'chosen'/'rejected' column (columns: question, answer)
    """
    columns = list(columns)
    if {"prompt", "messages", "conversations"} & set(columns) or {"chosen", "rejected"} <= set(columns):
        return
    raise SourceError(f"{name} has no 'prompt', 'messages', 'conversations' or 'chosen'/'rejected' column "
                      f"(columns: {', '.join(map(str, columns))})")


def normalize_record(record: dict[str, Any], line: int) -> ImportedRow:
    """One source record as prompt, responses and metadata; :class:`RowError` if it is bad."""
    keys = set(record)
    if {"chosen", "rejected"} <= keys:
        return _preference_row(record, line)
    if "chosen" in keys or "rejected" in keys:
        missing = "rejected" if "chosen" in keys else "chosen"
        raise RowError(line, f"has '{'chosen' if missing == 'rejected' else 'rejected'}' but no '{missing}' column")
    if "prompt" in keys:
        text, messages = _text_or_messages(record["prompt"], line, "'prompt'")
        responses: list[ImportedResponse] = []
        used = {"prompt"}
        if "responses" in keys:
            used.add("responses")
            values = _maybe_json(record["responses"])
            if values is not None:
                if not isinstance(values, list):
                    raise RowError(line, f"'responses' must be a list, got {type(values).__name__}")
                responses = [_response(v, line, f"response {i}") for i, v in enumerate(values, 1)]
        for key in sorted(k for k in keys if _RESPONSE_COLUMN.match(k)):
            used.add(key)
            if record[key] is None or record[key] == "":
                raise RowError(line, f"'{key}' is empty")
            responses.append(_response(record[key], line, f"'{key}'"))
        return ImportedRow(line, text, messages, responses, _metadata(record, used))
    if "messages" in keys or "conversations" in keys:
        column = "messages" if "messages" in keys else "conversations"
        value = _maybe_json(record[column])
        if not isinstance(value, list):
            raise RowError(line, f"'{column}' must be a list of chat messages, got {type(value).__name__}")
        messages = _messages(value, line, f"'{column}'")
        responses = []
        if messages[-1]["role"] == "assistant" and len(messages) > 1:
            if not messages[-1]["content"].strip():
                raise RowError(line, f"'{column}': the final assistant message is empty")
            responses = [ImportedResponse(messages[-1]["content"], [messages[-1]])]
            messages = messages[:-1]
        return ImportedRow(line, render_messages(messages), messages, responses, _metadata(record, {column}))
    found = ", ".join(sorted(map(str, keys))) or "none"
    raise RowError(line, "no 'prompt', 'messages' or 'chosen'/'rejected' column "
                         f"(columns found: {found})")


def _metadata(record: dict[str, Any], used: set[str]) -> dict[str, Any]:
    return {str(k): _jsonable(v) for k, v in record.items() if k not in used and k is not None}


def _preference_row(record: dict[str, Any], line: int) -> ImportedRow:
    chosen_raw, rejected_raw = _maybe_json(record["chosen"]), _maybe_json(record["rejected"])
    if "prompt" in record and record["prompt"] not in (None, ""):
        prompt_text, prompt_messages = _text_or_messages(record["prompt"], line, "'prompt'")
    elif isinstance(chosen_raw, list) and isinstance(rejected_raw, list):
        # implicit prompt: the leading messages both conversations share
        n = 0
        while n < min(len(chosen_raw), len(rejected_raw)) and chosen_raw[n] == rejected_raw[n]:
            n += 1
        if n == 0:
            raise RowError(line, "no 'prompt' column and 'chosen'/'rejected' share no leading messages")
        prompt_messages = _messages(chosen_raw[:n], line, "implicit prompt")
        prompt_text = render_messages(prompt_messages)
        chosen_raw, rejected_raw = chosen_raw[n:], rejected_raw[n:]
    else:
        raise RowError(line, "'chosen'/'rejected' rows need a 'prompt' column (or chat messages with "
                             "a shared prompt)")
    chosen = _response(chosen_raw, line, "'chosen'")
    rejected = _response(rejected_raw, line, "'rejected'")
    used = {"prompt", "chosen", "rejected"}
    metadata = _metadata(record, used | set(PROVENANCE_COLUMNS))
    row = ImportedRow(line, prompt_text, prompt_messages, [], metadata)
    if record.get("label_id") not in (None, "") and record.get("source") not in (None, ""):
        row.comparison_key = str(record.get("comparison_id") or f"label-{record['label_id']}")
        cpos, rpos = _int(record, "chosen_position", line, 0), _int(record, "rejected_position", line, 1)
        if cpos == rpos:
            raise RowError(line, "'chosen_position' and 'rejected_position' are equal")
        slots: dict[int, ImportedResponse] = {cpos: chosen, rpos: rejected}
        row.responses = [slots[p] for p in sorted(slots)]
        row.metadata["_positions"] = sorted(slots)
        row.labels = [_label(record, line, cpos, rpos)]
    else:
        row.metadata.update(_metadata({k: record[k] for k in ("margin",) if k in record}, set()))
        chosen.metadata.setdefault("preference", "chosen")
        rejected.metadata.setdefault("preference", "rejected")
        row.responses = [chosen, rejected]
    return row


def preference_label(row: ImportedRow, source: str, rater: str) -> ImportedLabel | None:
    """A plain TRL preference row's own preference (chosen over rejected) as a label by ``rater`` (its
    annotator and model version); None for any other row. Rows that already carry labels (our exports)
    keep theirs.

    >>> row = normalize_record({"prompt": "2+2?", "chosen": "4", "rejected": "5"}, line=7)
    >>> label = preference_label(row, "human", "dataset:math")
    >>> label.choice, label.display_order, label.label_id, label.annotator, label.model_version
    ('a', [0, 1], 'line-7', 'dataset:math', 'dataset:math')
    """
    if row.labels or [r.metadata.get("preference") for r in row.responses] != ["chosen", "rejected"]:
        return None
    return ImportedLabel(label_id=f"line-{row.line}", choice="a", ranking=None, strength=1, source=source,
                         annotator=rater, model_version=rater, display_order=[0, 1], labeled_at="", rationale="",
                         criterion_scores={}, provenance={})


def _int(record, key, line, default) -> int:
    value = record.get(key)
    if value in (None, ""):
        return default
    try:
        return int(value)
    except (TypeError, ValueError):
        raise RowError(line, f"'{key}' must be a whole number, got {value!r}") from None


def _label(record: dict[str, Any], line: int, cpos: int, rpos: int) -> ImportedLabel:
    source = str(record["source"])
    if source not in ("human", "lm"):
        raise RowError(line, f"'source' must be 'human' or 'lm', got {source!r}")
    choice = str(record.get("choice") or "")
    ranking = _maybe_json(record.get("ranking"))
    if choice not in ("a", "b", "tie", "ranking"):
        choice = "a" if cpos < rpos else "b"
    if choice == "ranking" and not isinstance(ranking, list):
        raise RowError(line, "'choice' is 'ranking' but 'ranking' is not a list of positions")
    strength = _int(record, "strength", line, 1)
    display = _maybe_json(record.get("display_order")) or []
    scores = _maybe_json(record.get("criterion_scores")) or {}
    prov = _maybe_json(record.get("provenance")) or {}
    return ImportedLabel(
        label_id=str(record["label_id"]), choice=choice, ranking=[int(x) for x in ranking] if ranking else None,
        strength=strength, source=source, annotator=str(record.get("annotator") or ""),
        model_version=str(record.get("model_version") or ""),
        display_order=[int(x) for x in display] if isinstance(display, list) else [],
        labeled_at=str(record.get("labeled_at") or ""), rationale=str(record.get("rationale") or ""),
        criterion_scores=scores if isinstance(scores, dict) else {},
        provenance=prov if isinstance(prov, dict) else {"value": prov},
    )


def merge_exported_rows(rows: Iterable[ImportedRow | RowError]) -> Iterator[ImportedRow | RowError]:
    """Merge consecutive rows of one exported comparison (same `comparison_key`) into one row
    with all its responses (by position) and all its labels (once per label id)."""
    pending: ImportedRow | None = None
    positions: dict[int, ImportedResponse] = {}
    for row in rows:
        if isinstance(row, ImportedRow) and row.comparison_key is not None and pending is not None \
                and row.comparison_key == pending.comparison_key:
            for pos, resp in zip(row.metadata.pop("_positions"), row.responses):
                positions.setdefault(pos, resp)
            seen = {lab.label_id for lab in pending.labels}
            pending.labels.extend(lab for lab in row.labels if lab.label_id not in seen)
            continue
        if pending is not None:
            yield _finish(pending, positions)
            pending = None
        if isinstance(row, ImportedRow) and row.comparison_key is not None:
            pending = row
            positions = dict(zip(row.metadata.pop("_positions"), row.responses))
            continue
        yield row
    if pending is not None:
        yield _finish(pending, positions)


def _finish(row: ImportedRow, positions: dict[int, ImportedResponse]) -> ImportedRow:
    order = sorted(positions)
    if order != list(range(len(order))):
        raise_line = row.line
        return RowError(raise_line, f"exported comparison {row.comparison_key} lacks responses at "
                                    f"positions {sorted(set(range(max(order) + 1)) - set(order))}")
    row.responses = [positions[p] for p in order]
    return row
