"""``python -m rlcore``: every rlcore capability from the command line, no Django needed.

Each command group lives beside the code it drives and exposes ``register(subparsers)``; this
module only assembles them. Groups import their heavy dependencies (torch, transformers) inside
the command function, so ``--help`` stays fast and works on a machine without the training stack.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from rlcore import __version__
from rlcore.errors import UserError

# module paths of command groups; each has register(subparsers)
COMMAND_GROUPS = [
    "rlcore.selfcheck",
    "rlcore.rewards.cli",
    "rlcore.training.cli",
    "rlcore.agreement",
    "rlcore.routing.cli",
    "rlcore.judges.cli",
    "rlcore.analysis.cli",
    "rlcore.generation.cli",
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m rlcore",
        description="Reward Studio's computing core: rubrics, rewards, judges, routing, training.",
    )
    parser.add_argument("--version", action="version", version=f"rlcore {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module_path in COMMAND_GROUPS:
        importlib.import_module(module_path).register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "handler", None):
        parser.print_help()
        return 0 if args.command is None else 2
    try:
        return int(args.handler(args) or 0)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
