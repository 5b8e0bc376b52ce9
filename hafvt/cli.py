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
    parser.add_argument("--debug", action="store_true", help="show the traceback of any error")
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


# What bad input raises: a missing or unreadable file, a bad value (hafvt raises ValueError naming the
# file and line or the key). Anything else is a bug: one line too, the traceback behind --debug.
EXPECTED = (ValueError, OSError)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except EXPECTED as e:
        if args.debug:
            raise
        print(f"hafvt {args.command}: error: {_one_line(e)}", file=sys.stderr)
        return 2
    except Exception as e:  # noqa: BLE001 - not an expected error: say so (stderr, status 1), the traceback for --debug
        if args.debug:
            raise
        raise SystemExit(f"hafvt {args.command}: internal error: {type(e).__name__}: {_one_line(e)} "
                         "(run again with --debug for the traceback)") from None


def _one_line(e: BaseException) -> str:
    return " ".join(str(e).split()) or type(e).__name__


if __name__ == "__main__":
    sys.exit(main())
