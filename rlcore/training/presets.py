"""GRPO loss variants as TRL ``GRPOConfig`` settings.

Each preset is the set of ``GRPOConfig`` fields that define the variant, taken from TRL's own
documentation (``grpo_config.py`` and the paper index):

- ``grpo``: DeepSeekMath GRPO — per-sequence length normalisation, group-std scaling, KL to a reference.
- ``dr_grpo``: Dr. GRPO — constant normaliser (no length bias), no std scaling (no difficulty bias), no KL.
- ``dapo``: DAPO — token-level normalisation over the batch, clip-higher (0.28), truncated completions masked.
- ``gspo``: GSPO — sequence-level importance ratios with the paper's tight clip range (3e-4 / 4e-4), no KL.

>>> grpo_preset("dr_grpo")["scale_rewards"]
'none'
>>> grpo_preset("gspo")["importance_sampling_level"]
'sequence'
>>> grpo_preset("dapo", beta=0.01)["beta"]
0.01
"""

from __future__ import annotations

from typing import Any, Literal

from rlcore.errors import UserError

Preset = Literal["grpo", "dr_grpo", "dapo", "gspo"]

PRESETS: dict[str, dict[str, Any]] = {
    "grpo": dict(loss_type="grpo", scale_rewards="group", importance_sampling_level="token",
                 beta=0.04, epsilon=0.2, epsilon_high=None, mask_truncated_completions=False),
    "dr_grpo": dict(loss_type="dr_grpo", scale_rewards="none", importance_sampling_level="token",
                    beta=0.0, epsilon=0.2, epsilon_high=None, mask_truncated_completions=False),
    "dapo": dict(loss_type="dapo", scale_rewards="group", importance_sampling_level="token",
                 beta=0.0, epsilon=0.2, epsilon_high=0.28, mask_truncated_completions=True),
    "gspo": dict(loss_type="grpo", scale_rewards="group", importance_sampling_level="sequence",
                 beta=0.0, epsilon=3e-4, epsilon_high=4e-4, mask_truncated_completions=False),
}


def grpo_preset(name: str, beta: float | None = None, epsilon: float | None = None,
                epsilon_high: float | None = None) -> dict[str, Any]:
    """The ``GRPOConfig`` keyword arguments of preset ``name``; explicit ``beta``/``epsilon``s override it.

    >>> grpo_preset("grpo")["loss_type"], grpo_preset("grpo")["beta"]
    ('grpo', 0.04)
    >>> grpo_preset("ppo")
    Traceback (most recent call last):
    ...
    rlcore.errors.UserError: preset: unknown GRPO preset 'ppo'; choose one of grpo, dr_grpo, dapo, gspo
    """
    if name not in PRESETS:
        raise UserError(f"preset: unknown GRPO preset {name!r}; choose one of {', '.join(PRESETS)}")
    settings = dict(PRESETS[name])
    if beta is not None:
        settings["beta"] = beta
    if epsilon is not None:
        settings["epsilon"] = epsilon
    if epsilon_high is not None:
        settings["epsilon_high"] = epsilon_high
    return settings
