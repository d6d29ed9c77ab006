"""Reads of data that apps built on annotation own, registered by those apps in their AppConfig.ready().

The policy registry and reward-model ensembles are training's, the responses' stored reward-model scores
routing's; both apps import annotation (labels for snapshots, comparisons to route), so annotation never
imports them back. The head-to-head build and the ensemble audit ask for what they need through these."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass


@dataclass
class Readers:
    # (project, ids) -> the ids among ``ids`` that are policies of the project's registry (training)
    project_policy_ids: Callable[..., set[int]] | None = None
    # (project, job_id) -> the job's registered ensemble members, each with a ``name``, in member order (training)
    ensemble_members: Callable[..., list] | None = None
    # (project) -> [{"job_id", "members": [names]}], newest job first (training)
    ensembles: Callable[..., list[dict]] | None = None
    # (reward_model, response_ids) -> [(prompt id, response id, score)] stored for those responses (routing)
    response_scores: Callable[..., list[tuple]] | None = None


readers = Readers()
