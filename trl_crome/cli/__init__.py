"""`trl-crome` command line: one sub-command per module of this package (augment, train, eval, quickstart).

Each sub-command lives in `trl_crome/cli/<name>.py` and exposes `register(subparsers)`, which adds its parser and
sets `func`. Heavy imports happen inside `func`, so `trl-crome --help` stays fast.

Every option is read in both spellings, `--output-dir` and `--output_dir`, whichever one its sub-command declares (as
TRL's own CLI does): the parsers are [`CromeArgumentParser`]s, and `add_subparsers` hands that class down to every
sub-command and sub-sub-command, so an option added later needs nothing more. `train` forwards its options to TRL's
`TrlParser`, which accepts both already.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import sys

from .. import __version__

SUBCOMMANDS = ("augment", "train", "eval", "quickstart")


def _spelling_key(option: str) -> str:
    return option.replace("_", "-")


class CromeArgumentParser(argparse.ArgumentParser):
    """An `argparse.ArgumentParser` that reads `--a-b` and `--a_b` as the same option, whichever one was declared.

    Before parsing, a long option this parser does not declare is rewritten to the declared spelling that differs from
    it only in `-` / `_` (`--max_rows=5` -> `--max-rows=5`). Anything after a bare `--` is left as it is, and an option
    declared in neither spelling is left for argparse to reject in the user's own spelling.
    """

    def parse_known_args(self, args=None, namespace=None):
        args = sys.argv[1:] if args is None else list(args)
        return super().parse_known_args(self.declared_spellings(args), namespace)

    def declared_spellings(self, args: list[str]) -> list[str]:
        """`args` with every long option in the spelling this parser declares."""
        declared = {_spelling_key(option): option for option in self._option_string_actions if option.startswith("--")}
        rewritten = []
        for index, arg in enumerate(args):
            if arg == "--":
                return rewritten + args[index:]
            name, equals, value = arg.partition("=")
            if name.startswith("--") and name not in self._option_string_actions:
                name = declared.get(_spelling_key(name), name)
            rewritten.append(name + equals + value)
        return rewritten


def build_parser() -> argparse.ArgumentParser:
    parser = CromeArgumentParser(
        prog="trl-crome",
        description="Causally robust reward models for TRL. Options read both spellings: --output-dir, --output_dir.",
    )
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
