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


@pytest.fixture(scope="module")
def pairpm_dir(tmp_path_factory):
    from tests.helpers import smollm2_tokenizer
    from tests.trainer.test_pairpm import tiny_causal_lm

    tokenizer = smollm2_tokenizer()
    path = tmp_path_factory.mktemp("tiny-pairpm")
    tiny_causal_lm(tokenizer, initializer_range=0.1).save_pretrained(path)
    tokenizer.save_pretrained(path)
    (path / "pairpm.json").write_text(json.dumps({"template_version": "pairpm@1", "max_length": 256}))
    return path


@pytest.mark.parametrize("kind", ["reward", "pairpm"])
def test_eval_rewardbench2_cli(kind, model_dir, pairpm_dir, tmp_path, capsys):
    from tests.evaluation.benchmark_fixtures import write_rewardbench2

    data = write_rewardbench2(tmp_path / "rb2.parquet")
    model = model_dir if kind == "reward" else pairpm_dir  # the PairPM is recognised by its pairpm.json
    argv = ["eval", "rewardbench2", "--model", str(model), "--data", str(data), "--per-subset", "1", "--device", "cpu"]
    assert main(argv + ["--output", str(tmp_path / "out")]) == 0
    results = json.loads((tmp_path / "out" / "rewardbench2.json").read_text())
    assert results["model_type"] == ("reward" if kind == "reward" else "preference")
    assert results["num_rows"] == 7 and len(results["subset_scores"]) == 6 and results["missing_subsets"] == []
    assert results["score"] == pytest.approx(sum(results["subset_scores"].values()) / 6)
    assert "| **Score** (mean of 6 subsets) |" in capsys.readouterr().out


@pytest.mark.parametrize("kind", ["reward", "pairpm"])
def test_eval_rmbench_cli_on_per_domain_files(kind, model_dir, pairpm_dir, tmp_path, capsys):
    from tests.evaluation.benchmark_fixtures import write_rmbench_domain_files

    files = [str(p) for p in write_rmbench_domain_files(tmp_path / "data")]
    model, model_type = (model_dir, "auto") if kind == "reward" else (pairpm_dir, "pairpm")
    argv = ["eval", "rmbench", "--model", str(model), "--model-type", model_type, "--data", *files]
    assert main(argv + ["--output", str(tmp_path / "out")]) == 0
    results = json.loads((tmp_path / "out" / "rmbench.json").read_text())
    assert results["model_type"] == ("reward" if kind == "reward" else "preference")
    assert results["domain_counts"] == {"chat": 2, "math": 1, "code": 1, "safety": 2}
    assert (tmp_path / "out" / "rmbench_matrices.png").exists() and "| **Overall** | 6 |" in capsys.readouterr().out


def test_eval_rmbench_cli_rejects_a_bad_file_before_loading_the_model(tmp_path):
    from tests.evaluation.benchmark_fixtures import rmbench_rows, write_rmbench

    rows = rmbench_rows()
    rows[2]["chosen"] = rows[2]["chosen"][:2]
    data = write_rmbench(tmp_path / "total_dataset.json", rows)
    argv = ["eval", "rmbench", "--model", str(tmp_path / "no-such-model"), "--data", str(data)]
    with pytest.raises(ValueError, match="row 2, field 'chosen'"):
        main(argv + ["--output", str(tmp_path / "out")])
