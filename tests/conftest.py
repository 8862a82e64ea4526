import os

import pytest

# The Hub is unreachable on CI machines: any accidental download must fail fast instead of hanging.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture
def tokenizer():
    from tests.helpers import smollm2_tokenizer

    return smollm2_tokenizer()
