"""No deprecation warning comes from the package's own settings (its config defaults, the recipe YAMLs, the
quickstart's arguments, a training step), with the installed transformers; `activation_checkpointing` works under
that name with every transformers `pyproject.toml` allows, and the deprecated name is still honoured."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest

from tests.helpers import tiny_reward_model
from tests.trainer.common import mixed_pairs
from tests.trainer.test_pairpm import synthetic_pairs, tiny_causal_lm
from trl_crome import CromePairPMConfig, CromePairPMTrainer, CromeRewardConfig, CromeRewardTrainer
from trl_crome.trainer.config import HAS_ACTIVATION_CHECKPOINTING

RECIPE_CONFIGS = sorted((Path(__file__).resolve().parents[2] / "recipes" / "configs").glob("*.yaml"))
DEPRECATIONS = (DeprecationWarning, FutureWarning, PendingDeprecationWarning)


def deprecations(caught) -> list[str]:
    return [
        f"{w.category.__name__}: {w.message} ({w.filename}:{w.lineno})"
        for w in caught
        if issubclass(w.category, DEPRECATIONS)
    ]


@pytest.fixture
def record():
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        yield caught


@pytest.mark.parametrize("config_class", [CromeRewardConfig, CromePairPMConfig])
def test_activation_checkpointing_defaults_on_and_reads_both_names(tmp_path, config_class, record):
    default = config_class(str(tmp_path), bf16=False)
    off = config_class(str(tmp_path), bf16=False, activation_checkpointing=False)
    assert not deprecations(record)
    assert default.gradient_checkpointing is True and off.gradient_checkpointing is False  # what TRL and Trainer read
    if HAS_ACTIVATION_CHECKPOINTING:
        assert default.activation_checkpointing is True and off.activation_checkpointing is False
    # A user's deprecated name still works (transformers warns about it: that setting is the user's, not ours).
    legacy = config_class(str(tmp_path), bf16=False, gradient_checkpointing=False)
    assert legacy.gradient_checkpointing is False


@pytest.mark.parametrize("config", RECIPE_CONFIGS, ids=lambda path: path.name)
def test_recipe_configs_parse_without_deprecations(config, record):
    from trl_crome.recipe import parse_recipe_args

    _, training_args, _, _ = parse_recipe_args(["--bf16", "false"], default_config=config)
    assert not deprecations(record)
    assert training_args.gradient_checkpointing is (config.name != "tiny.yaml")


def test_quickstart_arguments_without_deprecations(tmp_path, record):
    from trl_crome.quickstart import QuickstartConfig, build_recipe_args

    (_, training_args, _, _), _ = build_recipe_args(QuickstartConfig(output_dir=str(tmp_path), rewardbench="x.jsonl"))
    assert not deprecations(record)
    assert training_args.gradient_checkpointing is False


def test_a_training_step_with_default_settings_without_deprecations(tmp_path, tokenizer, record):
    reward = CromeRewardTrainer(
        tiny_reward_model(tokenizer),
        args=CromeRewardConfig(str(tmp_path / "bt"), bf16=False, max_steps=1, report_to=[], disable_tqdm=True),
        train_dataset=mixed_pairs(8),
        processing_class=tokenizer,
    )
    reward.train()
    pairpm = CromePairPMTrainer(
        tiny_causal_lm(tokenizer),
        args=CromePairPMConfig(str(tmp_path / "pm"), bf16=False, max_steps=1, report_to=[], disable_tqdm=True),
        train_dataset=synthetic_pairs(4, 2),
        processing_class=tokenizer,
    )
    pairpm.train()
    assert not deprecations(record)
    flag = "is_activation_checkpointing" if HAS_ACTIVATION_CHECKPOINTING else "is_gradient_checkpointing"
    assert getattr(reward.model, flag) and getattr(pairpm.model, flag)  # on by default, as in TRL
