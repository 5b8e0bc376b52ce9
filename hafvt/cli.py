"""The ``hafvt`` command line. Each module in ``COMMANDS`` adds its own sub-commands."""
from __future__ import annotations

import argparse
import importlib
import sys

# Each module defines ``register(subparsers)``; a sub-command sets ``func`` to a callable(args) -> int.
COMMANDS = [
    "hafvt.commands.data",
    "hafvt.commands.embed",
    "hafvt.commands.train",
    "hafvt.commands.reproduce",
    "hafvt.commands.provenance",
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="hafvt", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    for name in COMMANDS:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as e:
            if e.name == name:  # that command group is not part of this install
                continue
            raise
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except (FileNotFoundError, ValueError) as e:
        print(f"hafvt {args.command}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
