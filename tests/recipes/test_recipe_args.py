"""The recipe configs parse with TRL's TrlParser into the settings each model needs, every field can be overridden
on the command line, and `trl-crome train` hands its options to that parser untouched."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from accelerate.commands.config.config_args import ClusterConfig
from accelerate.utils import DistributedType

from trl_crome.augment import CromeAugmenterConfig
from trl_crome.augment.presets import PAPER, PRESETS
from trl_crome.cli import build_parser
from trl_crome.recipe import (
    RECIPE_SET_AUGMENT_FIELDS,
    SETTINGS,
    CromeScriptArguments,
    parse_recipe_args,
    trainer_classes,
)
from trl_crome.trainer import CromeRewardConfig

RECIPES = Path(__file__).resolve().parents[2] / "recipes"
MODEL_CONFIGS = {
    "gemma9b.yaml": ("google/gemma-2-9b-it", "lora"),
    "gemma9b_full.yaml": ("google/gemma-2-9b-it", "full"),
    "qwen7b.yaml": ("Qwen/Qwen2.5-7B-Instruct", "lora"),
    "qwen7b_full.yaml": ("Qwen/Qwen2.5-7B-Instruct", "full"),
    "gemma2b.yaml": ("google/gemma-2-2b-it", "full"),
    "gemma2b_lora.yaml": ("google/gemma-2-2b-it", "lora"),
    "gemma9b_paper.yaml": ("google/gemma-2-9b-it", "paper"),
    "qwen7b_paper.yaml": ("Qwen/Qwen2.5-7B-Instruct", "paper"),
    "gemma2b_paper.yaml": ("google/gemma-2-2b-it", "paper"),
}
PAPER_CONFIGS = sorted(name for name, (_, mode) in MODEL_CONFIGS.items() if mode == "paper")
# bf16 cannot be validated on a CPU-only machine; everything else is parsed as written.
CPU = ["--bf16", "false"]


def parse(config: str, *overrides: str):
    return parse_recipe_args([*CPU, *overrides], default_config=RECIPES / "configs" / config)


@pytest.mark.parametrize("name", sorted(MODEL_CONFIGS))
def test_model_config_settings(name):
    script_args, training_args, model_args, augment_args = parse(name)
    model, mode = MODEL_CONFIGS[name]
    assert model_args.model_name_or_path == model
    # Full fine-tuning on one GPU keeps fp32 weights (bf16 would round away its small updates); the rest load bf16.
    assert model_args.dtype == ("float32" if name == "gemma2b.yaml" else "bfloat16")
    assert isinstance(training_args, CromeRewardConfig) and training_args.tie_loss_weight == 1.0
    # Gemma-2 soft-caps attention logits: sdpa would silently drop that, so these recipes use eager attention.
    assert model_args.attn_implementation == ("eager" if "gemma" in name else "sdpa")
    assert training_args.gradient_checkpointing is True
    if mode == "lora":
        assert model_args.use_peft and model_args.lora_task_type == "SEQ_CLS"  # trains and saves the score head
        assert training_args.learning_rate == 1e-4
    elif mode == "full":
        assert not model_args.use_peft
        assert 2e-6 <= training_args.learning_rate <= 1e-5  # a full fine-tune, not TRL's LoRA default
    else:  # the paper's values: test_paper_configs_carry_the_paper_hyper_parameters
        assert not model_args.use_peft
    assert script_args.setting == "bt" and script_args.oracle == "gemini"
    assert script_args.baseline_model == "train" and augment_args.filter_tau == 0.2
    assert_paper_preset_unchanged(augment_args)
    assert training_args.ddp_timeout >= 86400  # several GPUs wait at a barrier while rank 0 augments
    assert script_args.rewardbench == "hub"


@pytest.mark.parametrize("setting", SETTINGS)
@pytest.mark.parametrize("name", sorted(path.name for path in (RECIPES / "configs").glob("*.yaml")))
def test_every_config_parses_in_both_settings(name, setting):
    """TrlParser refuses a YAML key that no dataclass has, so a misspelt or removed field fails here."""
    assert name in MODEL_CONFIGS or name == "tiny.yaml", f"{name} is not covered by MODEL_CONFIGS"
    script_args, training_args, _, augment_args = parse(name, "--setting", setting)
    assert script_args.setting == setting and isinstance(training_args, trainer_classes(setting)[1])
    CromeAugmenterConfig(**vars(augment_args))  # the augmentation settings are a valid augmenter config


def assert_paper_preset_unchanged(augment_args) -> None:
    """Every model config augments with the paper preset and overrides none of its fields (a lite-style value left
    in a YAML would silently mix the two pipelines); the training layout is all that differs between configs."""
    assert augment_args.preset == PAPER
    overridden = {
        name: getattr(augment_args, name) for name in PRESETS[PAPER] if getattr(augment_args, name) is not None
    }
    assert not overridden, f"fields that override the paper preset: {overridden}"
    config = CromeAugmenterConfig(**vars(augment_args))
    assert {name: getattr(config, name) for name in PRESETS[PAPER]} == PRESETS[PAPER]
    assert config.directions == ["degrade", "upgrade"]


def launch_config(name: str) -> ClusterConfig:
    """The accelerate config that the YAML's own launch command names (its header comment)."""
    launch = re.search(r"--config_file (\S+)", (RECIPES / "configs" / name).read_text())
    assert launch, f"{name} names no accelerate config in its launch command"
    return ClusterConfig.from_yaml_file(RECIPES.parent / launch.group(1))


@pytest.mark.parametrize("setting", SETTINGS)
@pytest.mark.parametrize("name", PAPER_CONFIGS)
def test_paper_configs_carry_the_paper_hyper_parameters(name, setting):
    """Full fine-tuning, AdamW, 1 epoch, lr 1e-6, global batch 256 on 8 GPUs, cosine, warm-up 0.03, ZeRO-3,
    lambda 1, tau 0.2 (arXiv 2506.16507, appendix), in both settings (the PairPM column adds --setting pairpm)."""
    overrides = [] if setting == "bt" else ["--setting", "pairpm", "--max_length", "2048"]
    script_args, training_args, model_args, augment_args = parse(name, *overrides)
    accelerate = launch_config(name)
    assert accelerate.distributed_type == DistributedType.DEEPSPEED
    assert accelerate.deepspeed_config["zero_stage"] == 3 and accelerate.num_processes == 8
    global_batch = (
        training_args.per_device_train_batch_size
        * training_args.gradient_accumulation_steps
        * accelerate.num_processes
    )
    assert global_batch == 256
    assert not model_args.use_peft and not model_args.load_in_4bit and not model_args.load_in_8bit
    assert training_args.num_train_epochs == 1 and training_args.max_steps == -1
    assert training_args.learning_rate == 1e-6
    assert training_args.lr_scheduler_type == "cosine"
    assert training_args.get_warmup_steps(1000) == 30  # warm-up ratio 0.03
    assert training_args.optim.startswith("adamw")
    assert training_args.tie_loss_weight == 1.0 and augment_args.filter_tau == 0.2
    assert script_args.setting == setting and script_args.baseline_model == "train" and script_args.augment
    assert_paper_preset_unchanged(augment_args)


def test_memory_plan_covers_every_config_and_the_paper_configs_fit_80_gb(monkeypatch):
    """benchmarks/recipe_memory.py plans every shipped model config (reading its shapes from the YAML) and the
    paper's PairPM column; the paper configs' planned peaks leave room on 8 x 80 GB."""
    monkeypatch.syspath_prepend(str(RECIPES.parent / "benchmarks"))
    import recipe_memory

    planned = {recipe.config for recipe in recipe_memory.RECIPES.values()}
    assert planned == set(MODEL_CONFIGS)
    for name in PAPER_CONFIGS:
        variants = [recipe for recipe in recipe_memory.RECIPES.values() if recipe.config == name]
        assert sorted(recipe.setting for recipe in variants) == ["bt", "pairpm"]
        for recipe in variants:
            _, training_args, _, _ = parse(name, "--setting", recipe.setting, "--max_length", str(recipe.max_length))
            assert recipe.pairs_per_gpu == training_args.per_device_train_batch_size and recipe.gpus == 8
            plan = recipe_memory.memory_plan(recipe, recipe_memory.build_config(recipe.model, tiny=False))
            assert plan["total"] < 60, recipe.name  # GiB per GPU, before CUDA context and communication buffers


@pytest.mark.parametrize("script", ["gemma9b", "qwen7b", "gemma2b"])
def test_each_recipe_script_has_its_default_config(script):
    source = (RECIPES / f"{script}.py").read_text()
    assert f'"configs" / "{script}.yaml"' in source
    assert (RECIPES / "configs" / f"{script}.yaml").exists()


def test_command_line_overrides_the_config():
    script_args, training_args, model_args, augment_args = parse(
        "qwen7b.yaml",
        "--learning_rate", "3e-5",
        "--filter_tau", "0.35",
        "--directions", "degrade",
        "--max_train_samples", "100",
        "--model_name_or_path", "Qwen/Qwen2.5-0.5B-Instruct",
        "--oracle_kwargs", '{"max_concurrency": 4}',
        "--rewardbench", "none",
        "--robustness_transforms", "none",
    )  # fmt: skip
    assert training_args.learning_rate == 3e-5
    assert augment_args.filter_tau == 0.35 and augment_args.directions == ["degrade"]
    assert script_args.max_train_samples == 100
    assert model_args.model_name_or_path == "Qwen/Qwen2.5-0.5B-Instruct"
    assert script_args.oracle_kwargs == {"max_concurrency": 4}
    assert script_args.rewardbench is None and script_args.robustness_transforms == []
    # The augmentation settings build a valid CromeAugmenterConfig.
    config = CromeAugmenterConfig(**vars(augment_args))
    assert config.filter_tau == 0.35


def test_augment_arguments_mirror_the_augmenter_config():
    _, _, _, augment_args = parse("gemma2b.yaml")
    fields = set(CromeAugmenterConfig.__dataclass_fields__)
    assert set(vars(augment_args)) == fields - set(RECIPE_SET_AUGMENT_FIELDS)


def test_bad_setting_is_rejected():
    with pytest.raises(ValueError, match="setting must be one of"):
        CromeScriptArguments(setting="dpo")


def test_train_subcommand_passes_every_option_through():
    args = build_parser().parse_args(["train", "--config", "x.yaml", "--learning_rate", "1e-5", "--use_peft"])
    assert args.recipe_args == ["--config", "x.yaml", "--learning_rate", "1e-5", "--use_peft"]


def test_pairpm_setting_parses_into_the_pairpm_config():
    from trl_crome.trainer.pairpm_config import CromePairPMConfig

    script_args, training_args, model_args, _ = parse(
        "qwen7b.yaml", "--setting", "pairpm", "--lora_task_type", "CAUSAL_LM"
    )
    assert isinstance(training_args, CromePairPMConfig)
    assert script_args.setting == "pairpm" and model_args.lora_task_type == "CAUSAL_LM"
    assert training_args.max_length == 1024 and training_args.tie_loss_weight == 1.0


def test_quantized_loading_reaches_the_trainer_and_pairpm_refuses_it(tmp_path):
    """The trainer class is a recorder here: really loading a model in 4 bits needs bitsandbytes and a GPU."""
    from trl_crome.recipe import run_recipe, train

    class Recorder:
        def __init__(self, **kwargs):
            self.kwargs = kwargs

        def train(self, resume_from_checkpoint=None):
            pass

        def save_model(self, output_dir):
            pass

    _, training_args, model_args, _ = parse("qwen7b.yaml", "--load_in_4bit", "--output_dir", str(tmp_path))
    assert train(Recorder, model_args, training_args, train_dataset=None).kwargs["quantization_config"].load_in_4bit
    _, training_args, model_args, _ = parse("qwen7b.yaml", "--output_dir", str(tmp_path))
    assert "quantization_config" not in train(Recorder, model_args, training_args, train_dataset=None).kwargs
    pairpm = parse("qwen7b.yaml", "--setting", "pairpm", "--lora_task_type", "CAUSAL_LM", "--load_in_8bit")
    with pytest.raises(ValueError, match="--setting bt only"):
        run_recipe(*pairpm)


def test_saved_augmented_data_is_reused_only_when_everything_that_shapes_it_matches():
    import copy
    import dataclasses

    from trl_crome.recipe.steps import augment_fingerprint

    script_args, training_args, _, augment_args = parse("qwen7b.yaml")
    base = augment_fingerprint(script_args, training_args, augment_args, 100)
    quiet = dataclasses.replace(augment_args, show_progress=not augment_args.show_progress)
    assert augment_fingerprint(script_args, training_args, quiet, 100) == base  # progress bars change nothing
    capped = dataclasses.replace(augment_args, max_cost=5.0, chunk_size=7)
    assert augment_fingerprint(script_args, training_args, capped, 100) == base  # nor do the cap and the chunks
    lite = dataclasses.replace(augment_args, preset="lite")
    assert augment_fingerprint(script_args, training_args, lite, 100) != base
    for owner, field_name, value in (
        (training_args, "seed", training_args.seed + 1),
        (script_args, "setting", "pairpm"),
        (script_args, "dataset_train_split", "train_prefs"),
    ):
        changed = copy.copy(owner)
        setattr(changed, field_name, value)
        args = (changed, training_args) if owner is script_args else (script_args, changed)
        assert augment_fingerprint(*args, augment_args, 100) != base, field_name
    assert augment_fingerprint(script_args, training_args, augment_args, 99) != base
