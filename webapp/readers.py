"""Reads that an app makes of data owned by an app built on it, registered by the owner in its AppConfig.ready().

Each app imports only the apps below it (docs/architecture.md, "App dependencies"); a read the other way names
what it needs here, outside every app, and the one app that owns the data fills the slot. The owners import
the app that reads (training and routing import annotation), so the reader never imports them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass


@dataclass
class Readers:
    # training: (project, ids) -> the ids among ``ids`` that are policies of the project's registry
    project_policy_ids: Callable[..., set[int]] | None = None
    # training: (project, job_id) -> the job's registered ensemble members, each with a ``name``, in member order
    ensemble_members: Callable[..., list] | None = None
    # training: (project) -> [{"job_id", "members": [names]}], newest job first
    ensembles: Callable[..., list[dict]] | None = None
    # routing: (reward_model, response_ids) -> [(prompt id, response id, score)] stored for those responses
    response_scores: Callable[..., list[tuple]] | None = None


readers = Readers()
