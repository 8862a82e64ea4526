import pytest

from tests.distributed.cases import CASES, write_base_models
from tests.distributed.harness import run_cases

TRAINING_CASES = ["bt_padded", "bt_padding_free", "bt_lora", "pairpm"]
assert set(TRAINING_CASES) <= set(CASES)


@pytest.fixture(scope="session")
def base_models(tmp_path_factory):
    return write_base_models(tmp_path_factory.mktemp("base_models"))


@pytest.fixture(scope="session")
def one_process(base_models, tmp_path_factory):
    """Every training case in one plain process (8 pairs per step): what the multi-process runs must reproduce."""
    output_dir = tmp_path_factory.mktemp("one_process")
    return output_dir, run_cases(output_dir, TRAINING_CASES, models=base_models)
