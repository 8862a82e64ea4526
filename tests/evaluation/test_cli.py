"""`trl-crome eval ...` on a saved tiny reward model and the real data files."""

from __future__ import annotations

import json

import pytest
import torch

from tests.helpers import shared_data, tiny_reward_model
from trl_crome.cli import main


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    from tests.helpers import smollm2_tokenizer

    tokenizer = smollm2_tokenizer()
    path = tmp_path_factory.mktemp("tiny-rm")
    tiny_reward_model(tokenizer, seed=0).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def test_eval_rewardbench_cli(model_dir, tmp_path, capsys):
    data = shared_data("rewardbench/filtered.jsonl")
    argv = ["eval", "rewardbench", "--model", str(model_dir), "--data", str(data), "--per-subset", "1"]
    assert main(argv + ["--max-length", "256", "--device", "cpu", "--output", str(tmp_path)]) == 0
    results = json.loads((tmp_path / "rewardbench.json").read_text())
    assert results["num_pairs"] == 23 and len(results["section_scores"]) == 4
    assert "| **Overall** |" in capsys.readouterr().out


def test_eval_robustness_and_transforms_cli(model_dir, tmp_path, capsys):
    data = shared_data("rewardbench/filtered.jsonl")
    argv = ["eval", "robustness", "--model", str(model_dir), "--data", str(data), "--per-subset", "1"]
    argv += ["--transforms", "add_quotes,char_swap", "--chat-template", "off", "--output", str(tmp_path)]
    assert main(argv) == 0
    results = json.loads((tmp_path / "robustness.json").read_text())
    assert list(results["per_transform"]) == ["add_quotes", "char_swap"]
    assert results["per_transform"]["add_quotes"]["changed"] == 23
    assert main(["eval", "transforms"]) == 0
    assert "homoglyph" in capsys.readouterr().out


def test_eval_bon_cli(model_dir, tmp_path):
    data = shared_data("gsm8k/test.jsonl")
    argv = ["eval", "bon", "--model", str(model_dir), "--task", "gsm8k", "--data", str(data), "--limit", "3"]
    assert main(argv + ["--n", "1", "4", "--output", str(tmp_path)]) == 0
    results = json.loads((tmp_path / "best_of_n.json").read_text())
    assert results["ns"] == [1, 4] and results["curves"]["math"]["accuracy"][0] == pytest.approx(0.25)


def test_eval_bon_cli_with_generated_candidates(model_dir, tmp_path):
    from transformers import LlamaForCausalLM

    from tests.helpers import smollm2_tokenizer, tiny_llama_config

    tokenizer = smollm2_tokenizer()
    policy_dir = tmp_path / "policy"
    torch.manual_seed(0)
    LlamaForCausalLM(tiny_llama_config(tokenizer)).save_pretrained(policy_dir)
    tokenizer.save_pretrained(policy_dir)
    argv = [
        "eval",
        "bon",
        "--model",
        str(model_dir),
        "--task",
        "gsm8k",
        "--data",
        str(shared_data("gsm8k/test.jsonl")),
    ]
    argv += ["--generate-with", str(policy_dir), "--num-candidates", "2", "--max-new-tokens", "4", "--limit", "2"]
    assert main(argv + ["--n", "1", "2", "--device", "cpu", "--output", str(tmp_path / "out")]) == 0
    selections = (tmp_path / "out" / "best_of_n_selections.jsonl").read_text().splitlines()
    assert [len(json.loads(line)["rewards"]) for line in selections] == [2, 2]
