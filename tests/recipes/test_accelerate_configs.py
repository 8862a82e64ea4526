"""Every shipped accelerate / DeepSpeed / FSDP config loads with accelerate's own config class and names only
settings that exist: each key of `deepspeed_config` / `fsdp_config` must be an option of `accelerate launch` (which
is how accelerate turns the YAML into a DeepSpeed or FSDP plugin)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from accelerate.commands.config.config_args import ClusterConfig
from accelerate.commands.launch import launch_command_parser
from accelerate.utils import DistributedType

CONFIG_DIR = Path(__file__).resolve().parents[2] / "recipes" / "accelerate_configs"
CONFIGS = sorted(CONFIG_DIR.glob("*.yaml"))
EXPECTED = {
    "single_gpu.yaml": DistributedType.NO,
    "multi_gpu.yaml": DistributedType.MULTI_GPU,
    "deepspeed_zero2.yaml": DistributedType.DEEPSPEED,
    "deepspeed_zero3.yaml": DistributedType.DEEPSPEED,
    "fsdp2.yaml": DistributedType.FSDP,
}


def launch_options() -> set[str]:
    return {option.lstrip("-") for action in launch_command_parser()._actions for option in action.option_strings}


def test_every_config_is_shipped():
    assert sorted(path.name for path in CONFIGS) == sorted(EXPECTED)


@pytest.mark.parametrize("path", CONFIGS, ids=lambda path: path.name)
def test_config_loads_with_accelerate(path):
    config = ClusterConfig.from_yaml_file(path)  # raises on any unknown top-level key
    assert config.distributed_type == EXPECTED[path.name]
    assert config.mixed_precision == "bf16"
    assert config.num_processes == (1 if config.distributed_type == DistributedType.NO else 8)


@pytest.mark.parametrize("path", CONFIGS, ids=lambda path: path.name)
def test_plugin_settings_are_launch_options(path):
    raw = yaml.safe_load(path.read_text())
    options = launch_options()
    for section in ("deepspeed_config", "fsdp_config"):
        unknown = sorted(key for key in raw.get(section, {}) if key not in options)
        assert not unknown, f"{path.name}: {section} keys unknown to `accelerate launch`: {unknown}"


def test_zero3_gathers_a_loadable_checkpoint():
    zero3 = ClusterConfig.from_yaml_file(CONFIG_DIR / "deepspeed_zero3.yaml").deepspeed_config
    assert zero3["zero_stage"] == 3
    assert zero3["zero3_init_flag"] is True  # build the model sharded, never a full copy per process
    assert zero3["zero3_save_16bit_model"] is True  # saved folder loads with from_pretrained, so it can be evaluated
    zero2 = ClusterConfig.from_yaml_file(CONFIG_DIR / "deepspeed_zero2.yaml").deepspeed_config
    assert zero2["zero_stage"] == 2 and zero2["zero3_init_flag"] is False


def test_fsdp2_saves_a_full_state_dict():
    fsdp = ClusterConfig.from_yaml_file(CONFIG_DIR / "fsdp2.yaml").fsdp_config
    assert fsdp["fsdp_version"] == 2
    assert fsdp["fsdp_state_dict_type"] == "FULL_STATE_DICT"
    assert fsdp["fsdp_auto_wrap_policy"] == "TRANSFORMER_BASED_WRAP"
