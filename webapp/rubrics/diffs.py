"""Diff two versions of a rubric (criterion by criterion) or of a reward spec (component by component).

Items are matched by name, so a renamed criterion shows as one removed and one added; a moved one says so.
"""

from __future__ import annotations

import json
from typing import Any


def _flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    """{"rule": {"kind": "regex", "pattern": "x"}} -> {"rule.kind": "regex", "rule.pattern": "x"}."""
    if isinstance(value, dict) and value:
        out: dict[str, Any] = {}
        for key, inner in value.items():
            out.update(_flatten(inner, f"{prefix}.{key}" if prefix else str(key)))
        return out
    return {prefix: value}


def _show(value: Any) -> str:
    if value is None:
        return "—"
    if isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False)


def _field_changes(old: dict[str, Any], new: dict[str, Any]) -> list[dict[str, str]]:
    a, b = _flatten(old), _flatten(new)
    return [{"field": k, "old": _show(a.get(k)), "new": _show(b.get(k))}
            for k in list(a) + [k for k in b if k not in a] if a.get(k) != b.get(k)]


def definition_diff(old: dict[str, Any], new: dict[str, Any], *, items_key: str) -> dict[str, Any]:
    """What changed from ``old`` to ``new``: top-level fields, then each item of ``items_key`` by name.

    >>> d = definition_diff({"name": "r", "criteria": [{"name": "a", "weight": 1}, {"name": "b", "weight": 1}]},
    ...                     {"name": "r", "criteria": [{"name": "b", "weight": 2}, {"name": "c", "weight": 1}]},
    ...                     items_key="criteria")
    >>> [(i["name"], i["status"]) for i in d["items"]]
    [('a', 'removed'), ('b', 'changed'), ('c', 'added')]
    >>> d["items"][1]["changes"]
    [{'field': 'weight', 'old': '1', 'new': '2'}, {'field': 'position', 'old': '2', 'new': '1'}]
    """
    top = _field_changes({k: v for k, v in old.items() if k != items_key},
                         {k: v for k, v in new.items() if k != items_key})
    old_items = {i.get("name"): (n, i) for n, i in enumerate(old.get(items_key) or [])}
    new_items = {i.get("name"): (n, i) for n, i in enumerate(new.get(items_key) or [])}
    items = []
    for name, (n, item) in old_items.items():
        if name not in new_items:
            items.append({"name": name, "status": "removed", "changes": [], "order": (n, -1)})
    for name, (n, item) in new_items.items():
        if name not in old_items:
            items.append({"name": name, "status": "added", "changes": _field_changes({}, item), "order": (n, 1)})
            continue
        m, before = old_items[name]
        changes = _field_changes(before, item)
        if m != n:
            changes.append({"field": "position", "old": str(m + 1), "new": str(n + 1)})
        items.append({"name": name, "status": "changed" if changes else "unchanged", "changes": changes,
                      "order": (n, 0)})
    items.sort(key=lambda i: i["order"])
    for i in items:
        del i["order"]
    return {"fields": top, "items": items,
            "changed": bool(top) or any(i["status"] != "unchanged" for i in items)}
