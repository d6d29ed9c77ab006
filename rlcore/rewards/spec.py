"""``RewardSpec``: a hybrid reward made of weighted components, with a normalisation.

Components (tagged by ``kind``):

- ``rubric_rules``: a rubric's rule criteria only (no model) — fast, deterministic;
- ``rubric_judge``: the whole rubric, its criteria without a rule graded by an LM judge;
- ``reward_model``: a trained sequence-classification checkpoint, scored in batches;
- ``verifier``: the final answer checked against a reference column (exact / numeric / math);
- ``length_penalty``: DAPO's soft overlong penalty, 0 up to ``max_length - cache_length``, then falling
  linearly to ``-penalty`` at ``max_length`` and beyond;
- ``process_reward_model``: each step of the completion scored in [0, 1] by a process reward model (or an LM
  step judge), aggregated by min / mean / last / product, optionally combined with an outcome component by
  ``renorm`` (see rlcore.rewards.process and docs/process_rewards.md).

Each component may carry a condition on a dataset column (``when``); on rows where it does not hold the
component gives None — so math prompts get a verifier and chat prompts a reward model, in one spec.

Normalisations: ``none`` (weighted sum), ``group_zscore`` (the weighted sum, z-scored within each prompt
group), ``normalize_then_sum`` (TRL's GDPO, ``multi_objective_aggregation="normalize_then_sum"``: each component
z-scored within its prompt's group with the sample std, then weighted and summed; TRL then normalises that sum
over the whole batch), ``par`` (Preference As Reward, Fu et al. 2025: ``(1/M) sum_m sigmoid(r - r_ref_m)`` over
the M reference responses in ``par_reference_column``, each scored by the same components, measured alike).

>>> spec = RewardSpec(name="math", components=[
...     {"kind": "verifier", "name": "correct", "reference_column": "answer", "weight": 1.0,
...      "when": {"column": "task", "equals": "math"}},
...     {"kind": "length_penalty", "name": "overlong", "max_length": 512, "cache_length": 128, "weight": 0.5},
... ])
>>> [c.kind for c in spec.components], spec.normalization
(['verifier', 'length_penalty'], 'none')
>>> spec.components[0].when.holds({"task": "math"}), spec.components[0].when.holds({"task": "chat"})
(True, False)
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from rlcore.rubric import Rubric
from rlcore.steps import StepSplit

Normalization = Literal["none", "group_zscore", "normalize_then_sum", "par"]
NAME_PATTERN = r"^[A-Za-z0-9_.-]+$"


class Condition(BaseModel):
    """A component applies to a row only where a dataset column has a given value (or one of several)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    column: str = Field(min_length=1, description="the dataset column to look at")
    equals: Any = Field(None, description="apply where the column equals this value")
    one_of: list[Any] | None = Field(None, description="apply where the column equals any of these values")

    @model_validator(mode="after")
    def _one_test(self) -> "Condition":
        if (self.equals is None) == (self.one_of is None):
            raise ValueError("give exactly one of 'equals' or 'one_of'")
        return self

    def holds(self, row: Any) -> bool:
        """Whether the component applies to this row (a missing column never matches)."""
        value = row.get(self.column)
        if self.one_of is not None:
            return value in self.one_of
        return value == self.equals


# A component's weight when its author gives none: the composer's "Add component" and its new-spec template
# start from it, and TRL's reward_weights carry it.
DEFAULT_WEIGHT = 1.0


class _Component(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=NAME_PATTERN, description="unique name; TRL logs it as rewards/<name>/mean")
    weight: float = Field(DEFAULT_WEIGHT, description="weight in the sum (may be negative for a penalty)")
    when: Condition | None = Field(None, description="apply only to rows matching this condition; None: all rows")


class _RubricComponent(_Component):
    rubric: Rubric | None = Field(None, description="the rubric, inline")
    rubric_path: str | None = Field(
        None, description="a rubric file (YAML/JSON), relative to the spec file; load_spec inlines it"
    )


class RubricRulesComponent(_RubricComponent):
    """A rubric's rule criteria (criteria without a rule are ignored), aggregated into [0, 1]."""

    kind: Literal["rubric_rules"] = Field(description="component type tag")


class RubricJudgeComponent(_RubricComponent):
    """The whole rubric in [0, 1]: rule criteria by rule, the others graded by the judge."""

    kind: Literal["rubric_judge"] = Field(description="component type tag")
    reference_column: str | None = Field(None, description="dataset column with a reference answer shown to the judge")


class RewardModelComponent(_Component):
    """A sequence-classification checkpoint's score (logit 0) of prompt + completion."""

    kind: Literal["reward_model"] = Field(description="component type tag")
    path: str = Field(description="checkpoint directory (config.json, weights, tokenizer) or hub id")
    batch_size: int = Field(16, ge=1, description="completions scored per forward pass")
    max_length: int = Field(1024, ge=8, description="tokens kept per input (longer inputs are truncated)")
    device: str = Field("auto", description="'auto' (CUDA when available), 'cpu', 'cuda', 'cuda:1', ...")


class VerifierComponent(_Component):
    """1 (``correct``) when the final answer matches the reference column, 0 (``incorrect``) otherwise."""

    kind: Literal["verifier"] = Field(description="component type tag")
    reference_column: str = Field(description="dataset column holding the reference answer")
    mode: Literal["exact", "numeric", "math"] = Field("math", description="how answers are compared")
    tolerance: float = Field(1e-6, ge=0, description="relative tolerance for numeric comparison")
    correct: float = Field(1.0, description="reward for a matching answer")
    incorrect: float = Field(0.0, description="reward for a wrong or missing answer")


class LengthPenaltyComponent(_Component):
    """DAPO soft overlong penalty: 0, then linear down to -penalty over the last ``cache_length`` units."""

    kind: Literal["length_penalty"] = Field(description="component type tag")
    max_length: int = Field(ge=1, description="length at and beyond which the penalty is full")
    cache_length: int = Field(ge=0, description="width of the soft zone before max_length (0: a hard cliff)")
    unit: Literal["tokens", "chars", "words"] = Field(
        "tokens", description="'tokens' uses the trainer's completion ids (words when not given)"
    )
    penalty: float = Field(1.0, ge=0, description="size of the full penalty")


class ProcessRewardModelComponent(_Component):
    """Every step of the completion scored in [0, 1], the scores aggregated into one reward per completion."""

    kind: Literal["process_reward_model"] = Field(description="component type tag")
    scorer: Literal["model", "judge"] = Field(
        "model", description="model: a process reward model (token classifier, P(good) at each step separator); "
                             "judge: the LM judge grades each step on [0, 1]")
    path: str | None = Field(None, description="the process reward model's directory or hub id (scorer 'model')")
    split: StepSplit = Field(default_factory=lambda: StepSplit(kind="newline", min_steps=1),
                             description="how a completion is cut into steps; a completion outside its "
                                         "min_steps..max_steps gets no reward (None)")
    aggregation: Literal["min", "mean", "last", "product"] = Field(
        "min", description="min: weakest step; mean: share of good steps; last: the final step's score; "
                           "product: every step good (independence assumed)")
    combine: Literal["none", "renorm"] = Field(
        "none", description="none: the aggregated score as it is; renorm: outcome + process - 1 with the outcome "
                            "component's value (after PPR's ReNorm; see docs/process_rewards.md)")
    outcome_component: str | None = Field(
        None, description="name of the outcome component (a verifier, rule or reward model with values in [0, 1]) "
                          "that renorm combines with; give it weight 0 to use the renormalised reward alone")
    step_separator: str | None = Field(
        None, description="separator token text the PRM was trained with; None reads it from rlcore_prm.json "
                          "(else '\\n')")
    judge_instruction: str = Field("Is this step correct and does it move towards the answer? 1 yes, 0 no.",
                                   description="what the step judge is asked (scorer 'judge')")
    batch_size: int = Field(16, ge=1, description="completions scored per forward pass")
    max_length: int = Field(1024, ge=8, description="tokens kept per completion (later steps are cut and unscored)")
    device: str = Field("auto", description="'auto' (CUDA when available), 'cpu', 'cuda', 'cuda:1', ...")


# Component kinds that load a model from their ``path`` (a folder or a hub id): what a launch must check a
# member may use, and what a deleted registry entry takes out of service.
MODEL_PATH_KINDS = ("reward_model", "process_reward_model")


def model_paths(definition: dict) -> list[tuple[int, str]]:
    """``(component index, path)`` of every component of a spec definition that loads a model from a path.

    >>> model_paths({"components": [{"kind": "length_penalty"}, {"kind": "reward_model", "path": "/m/rm"},
    ...                             {"kind": "process_reward_model", "path": None, "judge": {}}]})
    [(1, '/m/rm')]
    """
    return [(i, str(c["path"])) for i, c in enumerate(definition.get("components", []))
            if c.get("kind") in MODEL_PATH_KINDS and c.get("path")]


Component = Annotated[
    RubricRulesComponent | RubricJudgeComponent | RewardModelComponent | VerifierComponent | LengthPenaltyComponent
    | ProcessRewardModelComponent,
    Field(discriminator="kind"),
]


class RewardSpec(BaseModel):
    """A hybrid reward: weighted components and a normalisation. rlcore turns it into TRL reward functions."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, description="the spec's name")
    description: str = Field("", description="what the reward is for")
    components: list[Component] = Field(min_length=1, description="the reward components")
    normalization: Normalization = Field(
        "none", description="none, group_zscore, normalize_then_sum (TRL's GDPO: per-component group z-scores, "
                            "weighted sum, batch normalisation) or par")
    group_column: str | None = Field(
        None, description="rows with the same value here form a group for z-scores; None: rows with the same prompt"
    )
    par_reference_column: str | None = Field(
        None, description="for PAR: the column holding the reference response(s) to centre the reward on — one "
                          "text (or message list) or a list of them; rows without one get no PAR reward"
    )

    def resolve_paths(self, base: Path) -> "RewardSpec":
        """A copy with every ``rubric_path`` loaded and inlined (relative paths against ``base``); check_spec
        validates the inlined rubrics."""
        from rlcore.rubric import load_contract

        components = []
        for component in self.components:
            if isinstance(component, _RubricComponent) and component.rubric is None and component.rubric_path:
                path = Path(component.rubric_path)
                rubric = load_contract(path if path.is_absolute() else base / path, Rubric)
                component = component.model_copy(update={"rubric": rubric, "rubric_path": None})
            components.append(component)
        return self.model_copy(update={"components": components})
