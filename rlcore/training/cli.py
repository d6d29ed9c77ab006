"""``python -m rlcore train reward-model SPEC``, ``... train grpo SPEC`` and ``... train prm SPEC``.

SPEC is a JSON or YAML file holding a ``RewardModelTrainSpec`` / ``GRPOTrainSpec`` / ``PRMTrainSpec``. The command prints
``rlcore.events`` lines on stdout, logs on stderr, and exits 0 when done, 2 on a user error (the
message says what to fix), 143 when stopped by SIGTERM after saving a checkpoint. ``--resume``
overrides the spec's ``resume`` field; ``--output-dir`` its ``output_dir``. ``... train settings grpo`` prints the
JSON Schema of a run's settings.
"""

from __future__ import annotations

import argparse
from pathlib import Path


def _load(args: argparse.Namespace, kind: str):
    from rlcore.training.specs import load_spec

    spec = load_spec(args.spec, kind)  # type: ignore[arg-type]
    updates = {}
    if args.resume:
        updates["resume"] = True
    if args.output_dir:
        updates["output_dir"] = Path(args.output_dir)
    return spec.model_copy(update=updates) if updates else spec


def run_reward_model(args: argparse.Namespace) -> int:
    from rlcore.training.reward_model import train_reward_model

    return train_reward_model(_load(args, "reward_model"))


def run_grpo(args: argparse.Namespace) -> int:
    from rlcore.training.grpo import train_grpo

    return train_grpo(_load(args, "grpo"))


def run_prm(args: argparse.Namespace) -> int:
    from rlcore.training.prm import train_prm

    return train_prm(_load(args, "prm"))


SETTINGS = {"reward-model": "RewardModelSettings", "grpo": "GRPOSettings", "prm": "PRMSettings"}


def run_settings(args: argparse.Namespace) -> int:
    """Print the JSON Schema of a run's settings: every field with its type, bounds, default and description,
    the same document the webapp's launch API shows (a spec file is these plus the launcher's fields)."""
    import json

    from rlcore.training import specs

    print(json.dumps(getattr(specs, SETTINGS[args.kind]).model_json_schema(), indent=2))
    return 0


def register(subparsers) -> None:
    parser = subparsers.add_parser("train", help="train a reward model or a GRPO policy from a spec file")
    commands = parser.add_subparsers(dest="train_command", metavar="WHAT")
    for name, handler, help_text in (
            ("reward-model", run_reward_model, "Bradley-Terry reward model (TRL RewardTrainer)"),
            ("grpo", run_grpo, "GRPO policy against a RewardSpec (TRL GRPOTrainer)"),
            ("prm", run_prm, "process reward model: token classification at step separators")):
        sub = commands.add_parser(name, help=help_text)
        sub.add_argument("spec", help="spec file (.json / .yaml)")
        sub.add_argument("--resume", action="store_true", help="resume from the last checkpoint in output_dir")
        sub.add_argument("--output-dir", default=None, help="override the spec's output_dir")
        sub.set_defaults(handler=handler)
    sub = commands.add_parser("settings", help="print the JSON Schema of a run's settings (what a spec file may set)")
    sub.add_argument("kind", choices=list(SETTINGS))
    sub.set_defaults(handler=run_settings)
