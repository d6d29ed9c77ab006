"""Hybrid rewards: a ``RewardSpec`` of weighted components (rubric rules, rubric judge, reward model,
verifier, length penalty), normalised, scored on rows (``score_rows``) or handed to TRL
(``rlcore.rewards.trl_adapter.build_reward_funcs``). Heavy libraries load only when a reward model scores."""

from rlcore.rewards.check import check_spec, load_spec, save_spec, validate_spec
from rlcore.rewards.engine import RewardEngine, ScoredRow, score_rows
from rlcore.rewards.spec import Condition, RewardSpec

__all__ = [
    "Condition",
    "RewardEngine",
    "RewardSpec",
    "ScoredRow",
    "check_spec",
    "load_spec",
    "save_spec",
    "score_rows",
    "validate_spec",
]
