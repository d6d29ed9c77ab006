"""Validation of a RewardSpec at save time, so that a bad spec never reaches the middle of a training job.

>>> spec = RewardSpec(name="s", components=[
...     {"kind": "verifier", "name": "v", "reference_column": "gold", "weight": 0},
...     {"kind": "verifier", "name": "v", "reference_column": "answer", "weight": 0}])
>>> for p in check_spec(spec, dataset_columns=["prompt", "answer"]): print(p)
component 'v', field 'components[0].reference_column': column 'gold' is not in the dataset (columns: answer, prompt)
component 'v', field 'components[1].name': duplicate component name; names must be unique
spec 's', field 'components[*].weight': all weights are zero; give at least one component a non-zero weight
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

from rlcore.errors import UserError
from rlcore.rubric import check_rubric, load_contract, save_contract
from rlcore.rules import AnswerMatchRule, Problem
from rlcore.rewards.spec import (
    LengthPenaltyComponent,
    ProcessRewardModelComponent,
    RewardModelComponent,
    RewardSpec,
    RubricJudgeComponent,
    RubricRulesComponent,
    VerifierComponent,
)

TOTAL_NAME = "total"
_WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin", "model.safetensors.index.json", "pytorch_model.bin.index.json")
_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "tokenizer.model")


def reward_model_problems(path: str) -> list[str]:
    """Why ``path`` is not a usable sequence-classification checkpoint directory (empty when it is).

    A path that does not exist locally but looks like a hub id (``org/name``) is accepted: it is resolved when
    the model loads.

    >>> reward_model_problems("/no/such/dir")
    ['/no/such/dir does not exist']
    """
    p = Path(path).expanduser()
    if not p.exists():
        if not path.startswith((".", "/", "~")) and path.count("/") == 1 and not p.suffix:
            return []  # a hub id such as "org/model"
        return [f"{path} does not exist"]
    if not p.is_dir():
        return [f"{path} is a file, not a checkpoint directory"]
    out = []
    if not (p / "config.json").is_file():
        return [f"{path} has no config.json: not a model directory"]
    if not any((p / f).is_file() for f in _WEIGHT_FILES):
        out.append(f"{path} has no weights ({' or '.join(_WEIGHT_FILES[:2])})")
    if not any((p / f).is_file() for f in _TOKENIZER_FILES):
        out.append(f"{path} has no tokenizer files (tokenizer.json or tokenizer_config.json)")
    try:
        architectures = json.loads((p / "config.json").read_text()).get("architectures") or []
    except (OSError, ValueError):
        return out + [f"{path}/config.json is not valid JSON"]
    if architectures and not any(a.endswith("ForSequenceClassification") for a in architectures):
        out.append(f"{path} is a {architectures[0]}, not a sequence-classification (reward) model")
    return out


def _process_problems(spec: RewardSpec, c: ProcessRewardModelComponent, where: str, field: str) -> list[Problem]:
    from rlcore.rewards.process import process_model_problems

    out = []
    if c.scorer == "model":
        if not c.path:
            out.append(Problem(where=where, field=field + "path", message="scorer 'model' needs the path of a "
                                                                         "process reward model"))
        else:
            out.extend(Problem(where=where, field=field + "path", message=m) for m in process_model_problems(c.path))
    names = {o.name: o for o in spec.components}
    if c.combine == "renorm":
        outcome = names.get(c.outcome_component or "")
        if outcome is None:
            out.append(Problem(where=where, field=field + "outcome_component",
                               message=f"renorm needs the name of an outcome component of this spec (one of "
                                       f"{', '.join(n for n in names if n != c.name)})"))
        elif isinstance(outcome, ProcessRewardModelComponent):
            out.append(Problem(where=where, field=field + "outcome_component",
                               message=f"{outcome.name!r} is a process component; renorm needs an outcome one "
                                       "(a verifier, rule or reward model)"))
    elif c.outcome_component is not None:
        out.append(Problem(where=where, field=field + "outcome_component",
                           message="outcome_component only acts with combine 'renorm'; set it or remove this field"))
    return out


def check_spec(spec: RewardSpec, dataset_columns: Iterable[str] | None = None) -> list[Problem]:
    """Every problem in a spec, each naming the component (and criterion) and the field to fix.

    ``dataset_columns``: when given, every column the spec reads must be among them.
    """
    columns = None if dataset_columns is None else set(dataset_columns)
    out: list[Problem] = []

    def column_problem(where: str, field: str, column: str | None) -> None:
        if columns is not None and column is not None and column not in columns:
            out.append(Problem(where=where, field=field, message=f"column {column!r} is not in the dataset "
                                                                 f"(columns: {', '.join(sorted(columns))})"))

    seen: set[str] = set()
    for i, c in enumerate(spec.components):
        where, field = f"component {c.name!r}", f"components[{i}]."
        if c.name in seen:
            out.append(Problem(where=where, field=field + "name", message="duplicate component name; names must be unique"))
        seen.add(c.name)
        if c.name == TOTAL_NAME and spec.normalization != "none":
            out.append(Problem(where=where, field=field + "name",
                               message=f"{TOTAL_NAME!r} is the name of the combined reward; rename the component"))
        if c.when is not None:
            column_problem(where, field + "when.column", c.when.column)
        if isinstance(c, (RubricRulesComponent, RubricJudgeComponent)):
            if c.rubric is None and not c.rubric_path:
                out.append(Problem(where=where, field=field + "rubric", message="give a rubric or a rubric_path"))
            elif c.rubric is None:
                if not Path(c.rubric_path).exists():
                    out.append(Problem(where=where, field=field + "rubric_path", message=f"{c.rubric_path} does not exist"))
            else:
                out.extend(check_rubric(c.rubric, where=f"{where}, ", field_prefix=field + "rubric."))
                for k, criterion in enumerate(c.rubric.criteria):
                    if isinstance(criterion.rule, AnswerMatchRule):
                        column_problem(f"{where}, criterion {criterion.name!r}",
                                       f"{field}rubric.criteria[{k}].rule.reference_column",
                                       criterion.rule.reference_column)
                if isinstance(c, RubricRulesComponent) and all(cr.rule is None for cr in c.rubric.criteria):
                    out.append(Problem(where=where, field=field + "rubric.criteria",
                                       message="no criterion has a rule; use kind 'rubric_judge' to grade with a judge"))
            if isinstance(c, RubricJudgeComponent):
                column_problem(where, field + "reference_column", c.reference_column)
        elif isinstance(c, RewardModelComponent):
            for message in reward_model_problems(c.path):
                out.append(Problem(where=where, field=field + "path", message=message))
        elif isinstance(c, VerifierComponent):
            column_problem(where, field + "reference_column", c.reference_column)
        elif isinstance(c, ProcessRewardModelComponent):
            out.extend(_process_problems(spec, c, where, field))
        elif isinstance(c, LengthPenaltyComponent) and c.cache_length > c.max_length:
            out.append(Problem(where=where, field=field + "cache_length",
                               message=f"cache_length ({c.cache_length}) exceeds max_length ({c.max_length})"))

    weights = [c.weight for c in spec.components]
    if all(w == 0 for w in weights):
        out.append(Problem(where=f"spec {spec.name!r}", field="components[*].weight",
                           message="all weights are zero; give at least one component a non-zero weight"))
    elif sum(weights) < 0:
        out.append(Problem(where=f"spec {spec.name!r}", field="components[*].weight",
                           message=f"weights sum to {sum(weights):g}; a negative total rewards what you penalise"))
    if spec.normalization == "par":
        if not spec.par_reference_column:
            out.append(Problem(where=f"spec {spec.name!r}", field="par_reference_column",
                               message="PAR needs the column holding a reference response"))
        column_problem(f"spec {spec.name!r}", "par_reference_column", spec.par_reference_column)
    column_problem(f"spec {spec.name!r}", "group_column", spec.group_column)
    if spec.normalization == "normalize_then_sum" and spec.group_column:
        # TRL's GDPO z-scores the num_generations completions of one prompt; it cannot group by a column
        out.append(Problem(where=f"spec {spec.name!r}", field="group_column",
                           message="normalize_then_sum (TRL's GDPO) groups the completions of each prompt; "
                                   "remove group_column or use group_zscore"))
    return out


def validate_spec(spec: RewardSpec, dataset_columns: Iterable[str] | None = None, source: str | None = None) -> RewardSpec:
    """Return the spec, or raise UserError listing every problem (see check_spec)."""
    problems = check_spec(spec, dataset_columns)
    if problems:
        raise UserError((f"{source}: " if source else "") + "; ".join(str(p) for p in problems))
    return spec


def load_spec(path: str | Path, dataset_columns: Iterable[str] | None = None, *, validate: bool = True) -> RewardSpec:
    """Load a spec from YAML/JSON, inline its rubric files, and validate it; errors name file and field."""
    spec = load_contract(path, RewardSpec).resolve_paths(Path(path).parent)
    return validate_spec(spec, dataset_columns, source=str(path)) if validate else spec


def save_spec(spec: RewardSpec, path: str | Path) -> None:
    """Save a spec as YAML (.yaml/.yml) or JSON."""
    save_contract(spec, path)
