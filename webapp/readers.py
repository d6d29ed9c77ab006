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
    # routing: (project, path, response_ids) -> (name, {response id: score}) of the project's newest registered
    # reward model at ``path``, its stored scores among ``response_ids``; None when none is registered there
    registry_model_scores: Callable[..., tuple[str, dict[int, float]] | None] | None = None
    # training: (project) -> the project's registered reward models / process reward models (not deleted)
    reward_model_list: Callable[..., object] | None = None
    prm_list: Callable[..., object] | None = None
    # training: (project, definition) -> None; a ValidationError naming the path of a model the spec may not use
    check_spec_models: Callable[..., None] | None = None
    # annotation: (rubric_versions) -> how many labels were scored with any of them
    labels_scored_with: Callable[..., int] | None = None
    # judging: (rubric_versions) -> how many LM labelling runs graded on any of them
    lm_runs_graded_with: Callable[..., int] | None = None
    # judging: (project) -> the project's judge configs (a QuerySet, by name) / those a rubric preview can call
    judge_config_list: Callable[..., object] | None = None
    preview_judge_list: Callable[..., object] | None = None
    # judging: (config) -> the judge that grades a rubric preview's rule-less criteria now; a ValidationError
    # naming ``judge_config`` when it cannot
    preview_judge: Callable[..., object] | None = None
    # rounds: (project, ref) -> the over-optimisation sample ``ref`` names as a rubric-preview row, or None
    overopt_preview_row: Callable[..., dict | None] | None = None


readers = Readers()
