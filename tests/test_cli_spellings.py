"""One command-line convention: every `trl-crome` sub-command reads `--a-b` and `--a_b` as the same option, whichever
spelling it declares, including options added after this test was written (it walks the whole parser tree)."""

from __future__ import annotations

import argparse

import pytest

from trl_crome.cli import CromeArgumentParser, build_parser


def all_parsers(parser: argparse.ArgumentParser, path: tuple[str, ...] = ()):
    """`(path, parser)` of `parser` and of every sub-command below it."""
    yield path, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from all_parsers(sub, (*path, name))


def other_spelling(option: str) -> str:
    name = option[2:]
    return "--" + (name.replace("_", "-") if "_" in name else name.replace("-", "_"))


PARSERS = list(all_parsers(build_parser()))


def test_the_tree_holds_every_sub_command():
    paths = {" ".join(path) for path, _ in PARSERS}
    assert {"augment", "train", "eval", "eval rewardbench", "eval robustness", "eval bon", "quickstart"} <= paths


@pytest.mark.parametrize("path", [" ".join(path) or "trl-crome" for path, _ in PARSERS])
def test_every_option_reads_both_spellings(path):
    parser = dict((" ".join(p) or "trl-crome", parser) for p, parser in PARSERS)[path]
    assert isinstance(parser, CromeArgumentParser), f"{path} is a plain {type(parser).__name__}"
    options = [o for o in parser._option_string_actions if o.startswith("--") and ("-" in o[2:] or "_" in o[2:])]
    for option in options:
        alias = other_spelling(option)
        if alias in parser._option_string_actions:  # both declared: each is read as itself
            continue
        assert parser.declared_spellings([alias, "1"]) == [option, "1"], option
        assert parser.declared_spellings([f"{alias}=1"]) == [f"{option}=1"], option


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["quickstart", "--output-dir", "out", "--num-pairs", "3"], {"output_dir": "out", "num_pairs": 3}),
        (["quickstart", "--output_dir=out", "--max_steps", "4"], {"output_dir": "out", "max_steps": 4}),
        (
            ["augment", "--dataset", "d.jsonl", "--output", "o", "--oracle", "gemini", "--max_rows", "5"],
            {"max_rows": 5, "output": "o"},
        ),
        (
            ["eval", "rewardbench", "--model", "m", "--output", "o", "--per_subset", "2", "--batch_size=4"],
            {"per_subset": 2, "batch_size": 4},
        ),
        (
            [
                "eval",
                "bon",
                "--model",
                "m",
                "--output",
                "o",
                "--task",
                "gsm8k",
                "--data",
                "x",
                "--num_candidates",
                "4",
            ],
            {"num_candidates": 4},
        ),
    ],
)
def test_sub_commands_parse_either_spelling(argv, expected):
    args = vars(build_parser().parse_args(argv))
    assert {key: args[key] for key in expected} == expected


def test_train_forwards_options_untouched_to_trl():
    """`train`'s TrlParser (which reads both spellings itself) gets the options exactly as typed."""
    args = build_parser().parse_args(["train", "--output-dir", "o", "--learning_rate", "1e-5"])
    assert args.recipe_args == ["--output-dir", "o", "--learning_rate", "1e-5"]


def test_unknown_options_and_values_after_a_double_dash_are_left_alone(capsys):
    parser = dict(PARSERS)[("quickstart",)]
    assert parser.declared_spellings(["--", "--output_dir"]) == ["--", "--output_dir"]
    with pytest.raises(SystemExit):
        build_parser().parse_args(["quickstart", "--no_such_option", "1"])
    assert "unrecognized arguments: --no_such_option 1" in capsys.readouterr().err
