"""The queue's two hot paths as single PostgreSQL statements (see services.py for the rules).

An annotator's "next item" and "submit label" run thousands of times an hour per person, so on
PostgreSQL each is one or two round trips instead of a handful of ORM queries: "next" returns the
item the annotator holds or, if none, locks a comparison (FOR UPDATE SKIP LOCKED), takes a slot,
creates the assignment with a shuffled order and returns the prompt and responses, all in one
statement (atomic on its own); the label insert,
the assignment's move to `done` and the label count happen in one statement conditioned on the
assignment still being active. The ORM versions in services.py do the same on other databases
and are tested against the same invariants.

Both statements also check the caller's right to label (`MAY_LABEL`: a member whose role may label,
in an open project), so the API's queue endpoints need no separate permission query. A statement
that finds nothing does not say why; the services then ask `project_for_user` for the exact
404/403/409, which costs a query only on that rare path.
"""

from __future__ import annotations

import json
from datetime import datetime

from django.db import connection

from webapp.projects.permissions import Capability, ROLE_CAPABILITIES

LABELLING_ROLES = sorted(role for role, capabilities in ROLE_CAPABILITIES.items()
                         if Capability.LABEL in capabilities)

MAY_LABEL = """EXISTS (SELECT 1 FROM projects_membership m JOIN projects_project pr ON pr.id = m.project_id
                 WHERE m.project_id = %(project)s AND m.user_id = %(user)s
                   AND m.role = ANY(%(labelling_roles)s) AND NOT pr.is_closed)"""

_RESPONSES = """
    (SELECT coalesce(jsonb_agg(jsonb_build_object('id', r.id, 'text', r.text, 'messages', r.messages)
                              ORDER BY o.n), '[]'::jsonb)
       FROM jsonb_array_elements_text({order}) WITH ORDINALITY AS o(rid, n)
       JOIN datasets_response r ON r.id = o.rid::bigint)
"""

HELD_SQL = f"""
SELECT a.id, a.comparison_id, c.kind, a.display_order, a.expires_at, p.text, p.messages,
       {_RESPONSES.format(order="a.display_order")} {{step_columns}}
  FROM annotation_assignment a
  JOIN annotation_comparison c ON c.id = a.comparison_id
  JOIN datasets_prompt p ON p.id = c.prompt_id {{step_join}}
 WHERE a.project_id = %(project)s AND a.annotator_id = %(user)s AND a.status = 'active' AND a.expires_at > %(now)s
   AND c.kind {{kind}}
 ORDER BY a.assigned_at DESC
 LIMIT 1
"""

NEXT_SQL = f"""
WITH held AS (
    SELECT a.id, a.comparison_id, a.display_order, a.expires_at
      FROM annotation_assignment a
     WHERE a.project_id = %(project)s AND a.annotator_id = %(user)s AND a.status = 'active'
       AND a.expires_at > %(now)s AND {MAY_LABEL}
       AND EXISTS (SELECT 1 FROM annotation_comparison hc WHERE hc.id = a.comparison_id AND hc.kind {{kind}})
     ORDER BY a.assigned_at DESC
     LIMIT 1
), picked AS (
    SELECT c.id FROM annotation_comparison c
     WHERE NOT EXISTS (SELECT 1 FROM held) AND {MAY_LABEL}
       AND c.project_id = %(project)s AND c.is_active AND c.taken < c.overlap AND c.kind {{kind}} {{gold}}
       AND NOT EXISTS (SELECT 1 FROM annotation_assignment x
                        WHERE x.comparison_id = c.id AND x.annotator_id = %(user)s)
     ORDER BY c.id
     LIMIT 1
       FOR UPDATE SKIP LOCKED
), bumped AS (
    UPDATE annotation_comparison c SET taken = c.taken + 1 FROM picked WHERE c.id = picked.id
    RETURNING c.id, c.response_ids
), made AS (
    INSERT INTO annotation_assignment (comparison_id, annotator_id, project_id, status, display_order,
                                       assigned_at, expires_at)
    SELECT b.id, %(user)s, %(project)s, 'active',
           (SELECT jsonb_agg(e ORDER BY random()) FROM jsonb_array_elements(b.response_ids) e),
           %(now)s, %(expires)s
      FROM bumped b
    RETURNING id, comparison_id, display_order, expires_at
), chosen AS (
    SELECT * FROM held
    UNION ALL
    SELECT * FROM made
)
SELECT ch.id, ch.comparison_id, c.kind, ch.display_order, ch.expires_at, p.text, p.messages,
       {_RESPONSES.format(order="ch.display_order")} {{step_columns}}
  FROM chosen ch
  JOIN annotation_comparison c ON c.id = ch.comparison_id
  JOIN datasets_prompt p ON p.id = c.prompt_id {{step_join}}
"""

# A step item also carries its split's steps, its scale and the latest LM pre-label (the suggestion shown):
# read in the same statement, so "next step item" stays one round trip (two more queries per item cost the
# step bench ~15 % of its web CPU). The pairwise texts get neither.
STEP_COLUMNS = """, c.step_split_id, c.step_scale, s.steps,
       (SELECT jsonb_build_object('id', l.id, 'grades', l.grades, 'first_error', l.first_error,
                                  'model_version', l.model_version)
          FROM annotation_steplabel l WHERE l.comparison_id = c.id AND l.source = 'lm'
         ORDER BY l.id DESC LIMIT 1)"""
STEP_JOIN = "LEFT JOIN datasets_stepsplit s ON s.id = c.step_split_id"
STEP_PARTS = {False: {"{step_columns}": "", "{step_join}": ""},
              True: {"{step_columns}": STEP_COLUMNS, "{step_join}": STEP_JOIN}}


def _for_kind(sql: str, steps: bool) -> str:
    sql = sql.replace("{kind}", KIND_FILTERS[steps])
    for mark, text in STEP_PARTS[steps].items():
        sql = sql.replace(mark, text)
    return sql

ASSIGNMENT_SQL = f"""
SELECT a.id, a.annotator_id, a.status, a.display_order, a.comparison_id, c.kind, c.response_ids
  FROM annotation_assignment a JOIN annotation_comparison c ON c.id = a.comparison_id
 WHERE a.project_id = %(project)s AND {{where}} AND {MAY_LABEL}
"""

LABEL_SQL = """
WITH done AS (
    UPDATE annotation_assignment SET status = 'done', finished_at = %(now)s
     WHERE id = %(assignment)s AND status = 'active'
    RETURNING id, comparison_id, display_order
), label AS (
    INSERT INTO annotation_preferencelabel (comparison_id, assignment_id, source, annotator_id, choice, ranking,
                                            strength, criterion_scores, rationale, display_order, model_version,
                                            rubric_version_id, provenance, created_at)
    SELECT d.comparison_id, d.id, 'human', %(user)s, %(choice)s, %(ranking)s::jsonb, %(strength)s,
           %(scores)s::jsonb, %(rationale)s, d.display_order, %(model_version)s, %(rubric_version)s, '{}'::jsonb,
           %(now)s
      FROM done d
    RETURNING id
), counted AS (
    UPDATE annotation_comparison c SET human_label_count = c.human_label_count + 1
      FROM done d WHERE c.id = d.comparison_id
)
SELECT id FROM label
"""


def _json(value):
    return json.loads(value) if isinstance(value, (str, bytes)) else value


def _item(row) -> dict | None:
    if row is None:
        return None
    assignment_id, comparison_id, kind, order, expires_at, text, messages, responses = row[:8]
    responses = _json(responses)
    item = {
        "assignment_id": assignment_id, "comparison_id": comparison_id, "kind": kind, "expires_at": expires_at,
        "display_order": _json(order),
        "prompt": {"text": text, "messages": _json(messages)},
        "responses": [{"letter": chr(65 + i), "response_id": r["id"], "text": r["text"], "messages": r["messages"]}
                      for i, r in enumerate(responses)],
    }
    if len(row) > 8:  # a step item: the same fields as services.step_details gives on the ORM path
        split_id, scale, steps, suggestion = row[8:]
        item.update(step_split_id=split_id, scale=scale, suggestion=_json(suggestion),
                    steps=[{"index": i, **step} for i, step in enumerate(_json(steps) or [])])
    return item


# Step items (kind "steps") are labelled in their own mode of the workbench: the pairwise queue never hands
# one out, and the step queue hands out nothing else. Both are the same statement with the kind filtered.
KIND_FILTERS = {False: "<> 'steps'", True: "= 'steps'"}
HELD_SQL_BY_KIND = {steps: _for_kind(HELD_SQL, steps) for steps in KIND_FILTERS}


def held_item(*, project_id: int, user_id: int, now: datetime, steps: bool = False) -> dict | None:
    with connection.cursor() as cur:
        cur.execute(HELD_SQL_BY_KIND[steps], {"project": project_id, "user": user_id, "now": now})
        return _item(cur.fetchone())


# Gold items are mixed in by a coin the services toss (services.gold_mode): "gold" claims only a gold
# comparison, "normal" only a normal one, "any" either. Three texts, so each is a plain index scan (the
# gold one on the partial index of gold comparisons); the item returned has the same fields whichever it is.
GOLD_FILTERS = {"any": "", "gold": "AND c.gold_answer <> ''", "normal": "AND c.gold_answer = ''"}
NEXT_SQL_BY_GOLD = {(mode, steps): _for_kind(NEXT_SQL.replace("{gold}", where), steps)
                    for mode, where in GOLD_FILTERS.items() for steps in KIND_FILTERS}


def next_item(*, project_id: int, user_id: int, now: datetime, expires: datetime, gold: str = "any",
              steps: bool = False) -> dict | None:
    """The annotator's held item or, if none, a newly claimed one: one statement, atomic.

    None: nothing left for them (of the ``gold`` kind asked), or they may not label here (not a member, a
    viewer, a closed project).
    """
    with connection.cursor() as cur:
        cur.execute(NEXT_SQL_BY_GOLD[gold, steps], {"project": project_id, "user": user_id, "now": now, "expires": expires,
                               "labelling_roles": LABELLING_ROLES})
        return _item(cur.fetchone())


def _assignment_fetch(sql: str, *, project_id: int, assignment_id: int | None, comparison_id: int | None,
                      user_id: int, **params) -> tuple | None:
    """The row ``sql`` reads for one assignment: the one named by ``assignment_id``, else the user's on
    ``comparison_id``; ``sql`` has a ``{where}`` mark for that condition."""
    if assignment_id is not None:
        where, named = "a.id = %(id)s", {"id": assignment_id}
    else:
        where, named = "a.comparison_id = %(id)s AND a.annotator_id = %(user)s", {"id": comparison_id}
    with connection.cursor() as cur:
        cur.execute(sql.replace("{where}", where), {"project": project_id, "user": user_id,
                                                    "labelling_roles": LABELLING_ROLES, **named, **params})
        return cur.fetchone()


def assignment_row(*, project_id: int, assignment_id: int | None, comparison_id: int | None,
                   user_id: int) -> dict | None:
    """The assignment to label, or None: no such assignment here, or the user may not label here."""
    row = _assignment_fetch(ASSIGNMENT_SQL, project_id=project_id, assignment_id=assignment_id,
                            comparison_id=comparison_id, user_id=user_id)
    if row is None:
        return None
    keys = ("id", "annotator_id", "status", "display_order", "comparison_id", "kind", "response_ids")
    out = dict(zip(keys, row))
    out["display_order"], out["response_ids"] = _json(out["display_order"]), _json(out["response_ids"])
    return out


def insert_label(*, assignment_id: int, user_id: int, choice: str, ranking, strength: int, scores: dict,
                 rationale: str, model_version: str, rubric_version_id: int | None, now: datetime) -> int | None:
    """The label's id, or None when the assignment was no longer active."""
    with connection.cursor() as cur:
        cur.execute(LABEL_SQL, {
            "assignment": assignment_id, "user": user_id, "choice": choice,
            "ranking": json.dumps(ranking) if ranking is not None else None, "strength": strength,
            "scores": json.dumps(scores), "rationale": rationale, "model_version": model_version,
            "rubric_version": rubric_version_id, "now": now})
        row = cur.fetchone()
    return row[0] if row else None


# A step label's submit, as the pairwise one: one read of the assignment (with the right to label, the item's
# step count and scale, and the suggestion's grades when one is named), then one conditional write. Anything
# but an active step item of the caller's, or a suggestion not found, goes to the ORM path for its exact error.
STEP_ASSIGNMENT_SQL = f"""
SELECT a.id, a.annotator_id, a.status, a.comparison_id, c.kind, c.step_split_id, c.step_scale,
       jsonb_array_length(s.steps),
       (SELECT l.grades FROM annotation_steplabel l
         WHERE l.id = %(suggestion)s AND l.comparison_id = c.id AND l.source = 'lm')
  FROM annotation_assignment a JOIN annotation_comparison c ON c.id = a.comparison_id
  LEFT JOIN datasets_stepsplit s ON s.id = c.step_split_id
 WHERE a.project_id = %(project)s AND {{where}} AND {MAY_LABEL}
"""

STEP_LABEL_SQL = """
WITH done AS (
    UPDATE annotation_assignment SET status = 'done', finished_at = %(now)s
     WHERE id = %(assignment)s AND status = 'active'
    RETURNING id, comparison_id
), label AS (
    INSERT INTO annotation_steplabel (comparison_id, assignment_id, step_split_id, source, annotator_id, scale,
                                      grades, first_error, note, suggestion_id, changed_steps, model_version,
                                      provenance, created_at)
    SELECT d.comparison_id, d.id, %(split)s, %(source)s, %(user)s, %(scale)s, %(grades)s::jsonb, %(first_error)s,
           %(note)s, %(suggestion)s, %(changed)s, %(model_version)s, '{}'::jsonb, %(now)s
      FROM done d
    RETURNING id
), counted AS (
    UPDATE annotation_comparison c SET human_label_count = c.human_label_count + 1
      FROM done d WHERE c.id = d.comparison_id
)
SELECT id FROM label
"""


def step_assignment_row(*, project_id: int, assignment_id: int | None, comparison_id: int | None, user_id: int,
                        suggestion_id: int | None) -> dict | None:
    """The step assignment to label, or None: no such assignment here, or the user may not label here.
    ``suggestion_grades`` is None when no suggestion was named or it is not an LM label of this item."""
    row = _assignment_fetch(STEP_ASSIGNMENT_SQL, project_id=project_id, assignment_id=assignment_id,
                            comparison_id=comparison_id, user_id=user_id, suggestion=suggestion_id)
    if row is None:
        return None
    keys = ("id", "annotator_id", "status", "comparison_id", "kind", "step_split_id", "scale", "n_steps",
            "suggestion_grades")
    out = dict(zip(keys, row))
    out["suggestion_grades"] = _json(out["suggestion_grades"])
    return out


def insert_step_label(*, assignment_id: int, user_id: int, split_id: int, source: str, scale: str, grades: list,
                      first_error: int | None, note: str, suggestion_id: int | None, changed: int | None,
                      model_version: str, now: datetime) -> int | None:
    """The step label's id, or None when the assignment was no longer active."""
    with connection.cursor() as cur:
        cur.execute(STEP_LABEL_SQL, {
            "assignment": assignment_id, "user": user_id, "split": split_id, "source": source, "scale": scale,
            "grades": json.dumps(grades), "first_error": first_error, "note": note, "suggestion": suggestion_id,
            "changed": changed, "model_version": model_version, "now": now})
        row = cur.fetchone()
    return row[0] if row else None
