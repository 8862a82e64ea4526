"""The recipe's augmentation step with `--max_cost`: a run stopped at the cap trains on nothing, says where it stopped,
and a rerun with a higher cap finishes from the cache (the real `GeminiOracle` against the local Gemini server)."""

from __future__ import annotations

import json

import pytest

from tests.augment.scripted import gemini_responder
from tests.recipes.test_recipe_args import parse
from tests.servers.gemini import GeminiServer
from trl_crome.quickstart import default_dataset_path
from trl_crome.recipe.steps import AugmentationStopped, augment, load_preference_data


def test_a_capped_augmentation_stops_the_recipe_and_a_higher_cap_finishes_it(tmp_path, monkeypatch):
    monkeypatch.setenv("GEMINI_API_KEY", "test-key-not-a-secret")
    data = load_preference_data(str(default_dataset_path())).select(range(4))
    with GeminiServer(responder=gemini_responder) as server:

        def run(max_cost):
            kwargs = json.dumps({"http_options": {"base_url": server.url}, "max_concurrency": 2})
            script_args, training_args, _, augment_args = parse(
                "tiny.yaml", "--preset", "paper", "--attributes_per_example", "1", "--oracle", "gemini",
                "--oracle_model", "gemini-2.5-flash", "--oracle_kwargs", kwargs, "--max_cost", str(max_cost),
                "--chunk_size", "2", "--show_progress", "false", "--output_dir", str(tmp_path / "out"),
            )  # fmt: skip
            return augment(script_args, training_args, augment_args, data, None, chat_template=False)

        with pytest.raises(AugmentationStopped, match="rerun with a higher --max_cost") as stopped:
            run(1e-9)
        calls = server.requests["generateContent"]
        assert 0 < calls <= 2  # the first calls in flight, then nothing
        data_dir = tmp_path / "out" / "crome_data"
        assert json.loads((data_dir / "summary.json").read_text())["stopped"]["reason"] == "max_cost"
        assert not (data_dir / "dataset").exists() and not (data_dir / "settings.json").exists()
        assert "0 of 4 rows" in str(stopped.value)

        augmented, summary = run(100.0)
        assert summary.stopped is None and summary.rows_done == 4
        assert server.requests["generateContent"] == 4 * 6  # 1 + 1 + 2 + 2 per row, none paid twice
        assert len(augmented.filter(lambda row: row["kind"] == "causal")) == 4 * 2
