"""GRPO loss variants as TRL ``GRPOConfig`` settings.

Each preset is the set of ``GRPOConfig`` fields that define the variant, taken from TRL's own
documentation (``grpo_config.py`` and the paper index):

- ``grpo``: DeepSeekMath GRPO — per-sequence length normalisation, group-std scaling, KL to a reference.
- ``dr_grpo``: Dr. GRPO — constant normaliser (no length bias), no std scaling (no difficulty bias), no KL.
- ``dapo``: DAPO — token-level normalisation over the batch, clip-higher (0.28), truncated completions masked.
- ``gspo``: GSPO — sequence-level importance ratios with the paper's tight clip range (3e-4 / 4e-4), no KL.

A clip acts only on an importance ratio that can differ from 1, i.e. when the policy takes optimizer steps
on a rollout after the one it was sampled with. TRL computes the old log-probabilities only when
``gradient_accumulation_steps % (steps_per_generation * num_iterations) != 0``; otherwise the ratio is
exactly 1 and ``epsilon``/``epsilon_high`` do nothing (GSPO is then GRPO with beta=0). So ``dapo`` and
``gspo`` also split each rollout into the papers' number of mini-batches (:data:`ROLLOUT_MINIBATCHES`: DAPO,
arXiv:2503.14476, "16 gradient updates for each rollout step"; GSPO, arXiv:2507.18071, "four
minibatches"), one optimizer step each: ``steps_per_generation = minibatches x gradient_accumulation_steps``.
:func:`inert_clip_warning` says when chosen settings switch the clip off again.

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


# optimizer steps (mini-batches) each rollout is split into, as each paper trains; DeepSeekMath's GRPO takes
# "a single update following each exploration stage", Dr. GRPO changes the objective, not the schedule
ROLLOUT_MINIBATCHES: dict[str, int] = {"grpo": 1, "dr_grpo": 1, "dapo": 16, "gspo": 4}
# presets whose definition is their clip range
CLIPPED_PRESETS = ("dapo", "gspo")


def preset_steps_per_generation(name: str, gradient_accumulation_steps: int,
                                steps_per_generation: int | None = None) -> int:
    """TRL ``steps_per_generation``: the user's value, else the preset's mini-batches x gradient accumulation.

    >>> preset_steps_per_generation("gspo", 2), preset_steps_per_generation("grpo", 2)
    (8, 2)
    >>> preset_steps_per_generation("dapo", 1, steps_per_generation=1)
    1
    """
    if steps_per_generation is not None:
        return steps_per_generation
    return ROLLOUT_MINIBATCHES.get(name, 1) * gradient_accumulation_steps


def clip_is_inert(gradient_accumulation_steps: int, steps_per_generation: int, num_iterations: int) -> bool:
    """Whether TRL's importance ratio is always 1 (the same test TRL uses to skip old log-probabilities).

    >>> clip_is_inert(1, 1, 1), clip_is_inert(1, 4, 1), clip_is_inert(4, 4, 1), clip_is_inert(1, 1, 2)
    (True, False, True, False)
    """
    return gradient_accumulation_steps % (steps_per_generation * num_iterations) == 0


def inert_clip_warning(name: str, *, gradient_accumulation_steps: int, steps_per_generation: int | None,
                       num_iterations: int, epsilon: float | None = None,
                       epsilon_high: float | None = None) -> str | None:
    """A sentence for the launch form and the job log when the clip of ``name`` (or one the user set) cannot act.

    >>> inert_clip_warning("gspo", gradient_accumulation_steps=1, steps_per_generation=None, num_iterations=1)
    >>> print(inert_clip_warning("gspo", gradient_accumulation_steps=1, steps_per_generation=1, num_iterations=1))
    ... # doctest: +NORMALIZE_WHITESPACE
    preset 'gspo': its clip range (epsilon 0.0003, epsilon_high 0.0004) never acts with steps_per_generation=1,
    gradient_accumulation_steps=1, num_iterations=1: each rollout is used up within one optimizer step, so the
    importance ratio is always 1 (GSPO is then GRPO with beta=0). Take several optimizer steps per rollout: leave
    steps_per_generation blank (the paper's 4 mini-batches), or raise num_iterations.
    """
    if name not in CLIPPED_PRESETS and epsilon is None and epsilon_high is None:
        return None
    steps = preset_steps_per_generation(name, gradient_accumulation_steps, steps_per_generation)
    if not clip_is_inert(gradient_accumulation_steps, steps, num_iterations):
        return None
    settings = grpo_preset(name, epsilon=epsilon, epsilon_high=epsilon_high)
    clip = f"epsilon {settings['epsilon']:g}" + (
        f", epsilon_high {settings['epsilon_high']:g}" if settings["epsilon_high"] is not None else "")
    same_as = {"gspo": " (GSPO is then GRPO with beta=0)", "dapo": " (DAPO's clip-higher does nothing)"}.get(name, "")
    advice = (f"leave steps_per_generation blank (the paper's {ROLLOUT_MINIBATCHES[name]} mini-batches), or raise "
              "num_iterations" if ROLLOUT_MINIBATCHES.get(name, 1) > 1
              else "set steps_per_generation above gradient_accumulation_steps, or raise num_iterations")
    return (f"preset {name!r}: its clip range ({clip}) never acts with steps_per_generation={steps}, "
            f"gradient_accumulation_steps={gradient_accumulation_steps}, num_iterations={num_iterations}: each "
            f"rollout is used up within one optimizer step, so the importance ratio is always 1{same_as}. Take several "
            f"optimizer steps per rollout: {advice}.")


# what a preset fixes and a spec may override field by field (None in the spec keeps the preset's value)
OVERRIDABLE = ("beta", "epsilon", "epsilon_high", "loss_type", "scale_rewards", "importance_sampling_level",
               "mask_truncated_completions")


def grpo_preset(name: str, beta: float | None = None, epsilon: float | None = None,
                epsilon_high: float | None = None, **overrides: Any) -> dict[str, Any]:
    """The ``GRPOConfig`` keyword arguments of preset ``name``; explicit values (not None) override it:
    ``beta``, ``epsilon``, ``epsilon_high`` and any other field of :data:`OVERRIDABLE`.

    >>> grpo_preset("grpo")["loss_type"], grpo_preset("grpo")["beta"]
    ('grpo', 0.04)
    >>> s = grpo_preset("gspo", loss_type="luspo", scale_rewards=None)
    >>> s["loss_type"], s["scale_rewards"], s["importance_sampling_level"]
    ('luspo', 'group', 'sequence')
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
    for key, value in overrides.items():
        if key not in OVERRIDABLE:
            raise UserError(f"{key}: a preset does not fix this field; set it on the spec directly")
        if value is not None:
            settings[key] = value
    return settings
