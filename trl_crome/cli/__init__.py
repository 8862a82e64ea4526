"""`trl-crome` command line: one sub-command per module of this package (augment, train, eval, quickstart).

Each sub-command lives in `trl_crome/cli/<name>.py` and exposes `register(subparsers)`, which adds its parser and
sets `func`. Heavy imports happen inside `func`, so `trl-crome --help` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import sys

from .. import __version__

SUBCOMMANDS = ("augment", "train", "eval", "quickstart")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="trl-crome", description="Causally robust reward models for TRL.")
    parser.add_argument("--version", action="version", version=f"trl-crome {__version__}")
    subparsers = parser.add_subparsers(dest="command", required=True)
    for name in SUBCOMMANDS:
        if importlib.util.find_spec(f"{__name__}.{name}") is not None:
            importlib.import_module(f"{__name__}.{name}").register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
