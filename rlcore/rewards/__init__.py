"""Hybrid rewards: a ``RewardSpec`` of weighted components (rubric rules, rubric judge, reward model,
verifier, length penalty), normalised, scored on rows (``score_rows``) or handed to TRL
(``rlcore.rewards.trl_adapter.build_reward_funcs``). Heavy libraries load only when a reward model scores.

The names below are imported on first use, so ``python -m rlcore --help`` (which imports the CLI module of
this package) does not build the pydantic models.
"""

from importlib import import_module
from typing import TYPE_CHECKING

_EXPORTS = {
    "Condition": "rlcore.rewards.spec",
    "RewardSpec": "rlcore.rewards.spec",
    "RewardEngine": "rlcore.rewards.engine",
    "ScoredRow": "rlcore.rewards.engine",
    "score_rows": "rlcore.rewards.engine",
    "check_spec": "rlcore.rewards.check",
    "load_spec": "rlcore.rewards.check",
    "save_spec": "rlcore.rewards.check",
    "validate_spec": "rlcore.rewards.check",
}
__all__ = sorted(_EXPORTS)

if TYPE_CHECKING:
    from rlcore.rewards.check import check_spec, load_spec, save_spec, validate_spec
    from rlcore.rewards.engine import RewardEngine, ScoredRow, score_rows
    from rlcore.rewards.spec import Condition, RewardSpec


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'rlcore.rewards' has no attribute {name!r}")
