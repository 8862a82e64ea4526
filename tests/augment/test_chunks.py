"""Bounded memory and incremental output: chunks on disk, the output identical to one single-shot run byte for byte,
finished chunks reused (and only those), and Python allocations that do not grow with the data set. The pipeline runs
for real with a scripted oracle (no LLM can run in unit tests) behind the real `CachedOracle`; the real UltraFeedback
rows are used where the shared data is present."""

from __future__ import annotations

import dataclasses
import gc
import json
import logging
import re
import tracemalloc
from collections import Counter
from pathlib import Path

import pytest
from datasets import Dataset, load_dataset, load_from_disk
from huggingface_hub import HfApi, RepoUrl

from tests.augment.scripted import ScriptedOracle
from tests.augment.test_augmenter import CHOSEN, PROMPTS, REJECTED
from trl_crome import CromeAugmenter, CromeAugmenterConfig
from trl_crome.augment.card import dataset_card

ULTRAFEEDBACK = Path(__file__).resolve().parents[3] / "shared" / "data" / "ultrafeedback" / "train.jsonl"


def _rows(count: int) -> list[dict]:
    """`count` rows with distinct prompts: the first 20 real UltraFeedback rows when present (else the test rows),
    again and again, each prompt made distinct."""
    if ULTRAFEEDBACK.exists():
        with open(ULTRAFEEDBACK, encoding="utf-8") as file:
            real = [json.loads(line) for _, line in zip(range(20), file)]
        base = [{key: row[key] for key in ("prompt", "chosen", "rejected")} for row in real]
    else:
        base = [{"prompt": p, "chosen": c, "rejected": r} for p, c, r in zip(PROMPTS, CHOSEN, REJECTED)]
    return [{**row, "prompt": f"{row['prompt']} ({i})"} for i, row in enumerate(base * (count // len(base) + 1))][
        :count
    ]


def _config(tmp_path, **overrides) -> CromeAugmenterConfig:
    return CromeAugmenterConfig(output_dir=str(tmp_path), show_progress=False, **overrides)


@pytest.mark.parametrize(
    ("preset", "conversational", "chunking"),
    [("paper", False, (3, 1)), ("paper", True, (2, 4)), ("lite", False, (1, 4)), ("lite", True, (3, 2))],
)
def test_chunked_output_equals_the_single_shot_output_byte_for_byte(tmp_path, preset, conversational, chunking):
    rows = _rows(7)
    rows[5]["prompt"] = rows[1]["prompt"]  # a prompt in two chunks (lite asks its rubric once)
    if conversational:
        rows = [
            {k: [{"role": "user" if k == "prompt" else "assistant", "content": v}] for k, v in r.items()} for r in rows
        ]
    data = Dataset.from_list(rows)
    types = ["iqn", "aligned", "paraphrase"]

    # The reference: every row in one chunk, the whole output written at once by `Dataset.to_json`.
    single = CromeAugmenter(ScriptedOracle(), _config(tmp_path / "single", preset=preset, neutral_types=types))
    expected = single(data)
    expected.to_json(tmp_path / "single.jsonl", lines=True, force_ascii=False)
    reference = (tmp_path / "single.jsonl").read_bytes()

    size, in_flight = chunking
    config = _config(tmp_path / "run", preset=preset, neutral_types=types, chunk_size=size, chunks_in_flight=in_flight)
    chunked = CromeAugmenter(ScriptedOracle(), config)
    output = chunked(data)
    chunked.to_json(tmp_path / "chunked.jsonl")  # written chunk by chunk
    assert (tmp_path / "chunked.jsonl").read_bytes() == reference
    assert len(list((tmp_path / "run" / "chunks").glob("*.arrow"))) == -(-len(rows) // size)
    assert output.to_list() == expected.to_list()
    assert chunked.summary.pairs == single.summary.pairs and chunked.summary.rejects == single.summary.rejects
    assert chunked.summary.calls == single.summary.calls  # a prompt's lite rubric is asked once across chunks


def test_finished_chunks_are_reused_and_only_chunks_whose_rows_or_settings_changed_are_recomputed(tmp_path):
    data = Dataset.from_list(_rows(6))
    config = _config(tmp_path, chunk_size=2)
    first = CromeAugmenter(ScriptedOracle(), config)
    reference = first(data).to_list()

    # The same run again: every chunk is read back, no request reaches even the cache.
    oracle = ScriptedOracle()
    again = CromeAugmenter(oracle, config)
    assert again(data).to_list() == reference
    assert oracle.requests == [] and again.summary.rows_reused == 6 and again.summary.calls == 0
    # Its summary is what a rerun that asked everything from the cache would say.
    assert again.summary.cache_hits == first.summary.calls == 6 * 26
    assert again.summary.cached_cost_usd == pytest.approx(first.summary.cost_usd)
    assert again.summary.pairs == first.summary.pairs and again.summary.templates == first.summary.templates

    # One row changed: its chunk is recomputed (paying for that row's calls only), the two others are reused.
    changed = Dataset.from_list(
        [*_rows(6)[:3], {**_rows(6)[3], "chosen": "A different chosen answer."}, *_rows(6)[4:]]
    )
    oracle = ScriptedOracle()
    partly = CromeAugmenter(oracle, config)
    rows = partly(changed).to_list()
    assert partly.summary.rows_reused == 4
    assert {request.prompt.count("A different chosen answer.") > 0 for request in oracle.requests} == {True}
    assert [r for r in rows if r["source_row"] not in (2, 3)] == [
        r for r in reference if r["source_row"] not in (2, 3)
    ]

    # Another setting that changes the output: no chunk is reused, nothing is paid (the answers are cached).
    oracle = ScriptedOracle()
    other = CromeAugmenter(oracle, _config(tmp_path, chunk_size=2, seed=7))
    other(data)
    assert other.summary.rows_reused == 0 and oracle.requests == []
    assert len(list((tmp_path / "chunks").glob("*.json"))) == 3  # the first settings' chunks were replaced


def test_without_output_dir_the_chunks_live_in_the_oracle_cache_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("TRL_CROME_CACHE", str(tmp_path / "home"))
    data = Dataset.from_list(_rows(2))
    config = CromeAugmenterConfig(preset="lite", cache_dir=str(tmp_path / "cache"), show_progress=False)
    CromeAugmenter(ScriptedOracle(), config)(data)
    (folder,) = (tmp_path / "cache" / "chunks").iterdir()  # one run fingerprint
    assert len(list(folder.glob("*.arrow"))) == 1 and not (tmp_path / "home").exists()
    again = CromeAugmenter(ScriptedOracle(), config)
    again(data)
    assert again.summary.rows_reused == 2
    elsewhere = CromeAugmenter(ScriptedOracle(), dataclasses.replace(config, cache_dir=str(tmp_path / "other")))
    elsewhere(data)
    assert elsewhere.summary.rows_reused == 0  # another cache folder: another run's state


def test_files_of_unfinished_chunks_are_deleted_and_finished_ones_kept(tmp_path):
    data = Dataset.from_list(_rows(4))
    config = _config(tmp_path, preset="lite", chunk_size=2)
    reference = CromeAugmenter(ScriptedOracle(), config)(data).to_list()
    chunks = tmp_path / "chunks"
    finished = sorted(path.name for path in chunks.iterdir())
    assert len(finished) == 4  # two chunks: pairs and record each
    # What a kill leaves: a half-written file, and pairs renamed into place without their record (another chunking).
    (chunks / ".000000000000-000000000003.arrow.tmp").write_bytes(b"half")
    (chunks / "000000000000-000000000003.arrow").write_bytes((chunks / finished[0]).read_bytes())

    oracle = ScriptedOracle()
    again = CromeAugmenter(oracle, config)
    assert again(data).to_list() == reference and again.summary.rows_reused == 4 and oracle.requests == []
    assert sorted(path.name for path in chunks.iterdir()) == finished


def test_a_transient_failure_pays_for_nothing_built_on_it_and_the_next_run_completes_the_chunk(tmp_path):
    data = Dataset.from_list(_rows(4))
    unlucky = _rows(4)[3]["prompt"]  # every call about the last row times out (after its retries)
    config = _config(tmp_path / "run", chunk_size=2)
    failing = ScriptedOracle(failures={unlucky: "timeout"})
    flaky = CromeAugmenter(failing, config)
    flaky(data)
    # Its attribute call failed: no fallback attributes, and none of its elements, rewrites or verifications asked.
    assert [request.template for request in failing.requests if unlucky in request.prompt] == ["attributes@1"]
    assert flaky.summary.rubric_fallbacks == {} and flaky.summary.rows_incomplete == 2  # its chunk's rows

    oracle = ScriptedOracle()
    rerun = CromeAugmenter(oracle, config)
    rows = rerun(data).to_list()
    assert rerun.summary.rows_reused == 2 and rerun.summary.rows_incomplete == 0  # the first chunk had no failure
    assert len(oracle.requests) == 26 and all(unlucky in request.prompt for request in oracle.requests)
    assert rows == CromeAugmenter(ScriptedOracle(), _config(tmp_path / "clean", chunk_size=2))(data).to_list()


@pytest.mark.parametrize("preset", ["paper", "lite"])
def test_an_attribute_whose_elements_or_rubric_failed_transiently_is_not_rewritten_until_the_rerun(tmp_path, preset):
    data = Dataset.from_list(_rows(4))
    # Paper: every row's elements call for "relevance" fails; lite: the rubric call of the last row's prompt.
    failing_call = "Attribute: relevance" if preset == "paper" else _rows(4)[3]["prompt"]
    config = _config(tmp_path / "run", chunk_size=2, preset=preset)
    failing = ScriptedOracle(failures={failing_call: "http_503"})
    flaky = CromeAugmenter(failing, config)
    flaky(data)
    asked = [request for request in failing.requests if failing_call in request.prompt]
    assert {request.template for request in asked} == {"causal_elements@1" if preset == "paper" else "rubrics@1"}
    assert len(asked) == (4 if preset == "paper" else 1)
    if preset == "paper":  # the other attributes were rewritten; "relevance" was not, with or without elements
        rewritten = {re.search(r"^Attribute to .+: (.+)$", r.prompt, re.M).group(1) for r in failing.requests
                     if r.template.startswith("counterfactual")}  # fmt: skip
        assert rewritten == {"factual_accuracy", "completeness", "clarity", "safety"}
    assert flaky.summary.element_failures == {} and flaky.summary.rubric_fallbacks == {}
    assert flaky.summary.rows_incomplete == (4 if preset == "paper" else 2)

    oracle = ScriptedOracle()
    rows = CromeAugmenter(oracle, config)(data).to_list()
    clean = ScriptedOracle()
    assert rows == CromeAugmenter(clean, _config(tmp_path / "clean", chunk_size=2, preset=preset))(data).to_list()
    # The rerun asks what failed and what depends on it, nothing else: the clean run's calls minus those answered.
    answered = Counter(request.cache_key("scripted") for request in failing.requests)
    answered -= Counter(request.cache_key("scripted") for request in asked)
    expected = Counter(request.cache_key("scripted") for request in clean.requests) - answered
    assert Counter(request.cache_key("scripted") for request in oracle.requests) == expected


def test_max_cost_keeps_finished_chunks_across_chunks_in_flight_and_a_rerun_completes_without_paying_twice(tmp_path):
    data = Dataset.from_list(_rows(8))
    reference_oracle = ScriptedOracle()
    reference = CromeAugmenter(reference_oracle, _config(tmp_path / "ref", chunk_size=2))(data).to_list()
    spent = CromeAugmenter(ScriptedOracle(), _config(tmp_path / "ref", chunk_size=2))
    spent(data)
    cap = spent.summary.cached_cost_usd * 0.6

    oracle = ScriptedOracle()
    config = _config(tmp_path / "run", chunk_size=2, chunks_in_flight=3, max_cost=cap)
    capped = CromeAugmenter(oracle, config)
    rows = capped(data).to_list()
    done = capped.summary.rows_done
    assert capped.summary.stopped["next_row"] == done and 0 < done < 8
    assert rows == [r for r in reference if r["source_row"] < done]
    saved = {json.loads(p.read_text())["start"] for p in (tmp_path / "run" / "chunks").glob("*.json")}
    assert set(range(0, done, 2)) <= saved  # every finished chunk is on disk

    again = ScriptedOracle()
    rest = CromeAugmenter(again, _config(tmp_path / "run", chunk_size=2, chunks_in_flight=3, max_cost=cap * 10))
    assert rest(data).to_list() == reference and rest.summary.stopped is None
    assert rest.summary.rows_reused >= done
    assert len(oracle.requests) + len(again.requests) == len(reference_oracle.requests)  # nothing paid twice


class _Forget(list):
    def append(self, item) -> None:
        pass


def _peak_python_bytes(tmp_path: Path, rows: int) -> tuple[int, int]:
    """Peak Python allocations (tracemalloc) of a run on `rows` rows read from a memory-mapped Arrow folder, and of
    writing its output as JSON lines."""
    folder = tmp_path / f"data-{rows}"
    Dataset.from_list(_rows(rows)).save_to_disk(str(folder))
    data = load_from_disk(str(folder))
    oracle = ScriptedOracle()
    oracle.requests = _Forget()  # the test oracle's own record of every request would grow with the data
    augmenter = CromeAugmenter(oracle, _config(tmp_path / f"run-{rows}", preset="lite", chunk_size=50))
    gc.collect()
    tracemalloc.start()
    try:
        augmenter(data)
        run = tracemalloc.get_traced_memory()[1]
        tracemalloc.reset_peak()
        augmenter.to_json(tmp_path / f"out-{rows}.jsonl")
        return run, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


@pytest.mark.slow
def test_python_allocations_do_not_grow_with_the_data_set(tmp_path):
    _peak_python_bytes(tmp_path, 50)  # one-time allocations (first imports, first JSON writing) out of the way
    small, large = _peak_python_bytes(tmp_path, 100), _peak_python_bytes(tmp_path, 500)
    row_text = sum(len(row["chosen"]) + len(row["rejected"]) + len(row["prompt"]) for row in _rows(20)) / 20
    for phase, before, after in zip(("run", "output"), small, large):
        # Holding the 400 extra rows (let alone their pairs: about 3x their text) would add 400 rows of text; what
        # may grow is a few KB per chunk (the output data set's per-file metadata) and 24 bytes per prompt (the pool).
        assert after - before < 400 * row_text / 4, (phase, small, large, row_text)
        assert after < 1.25 * before, (phase, small, large)


def mock_hub(monkeypatch) -> dict:
    """Replace the Hub's network calls (it cannot be reached from CI) by recorders: the repository creation and the
    card upload (`HfApi`), and the data upload (`Dataset.push_to_hub`, itself a Hub client)."""
    pushed: dict = {"create_repo": [], "upload_file": [], "dataset": []}

    def create_repo(self, repo_id, **kwargs):
        pushed["create_repo"].append({"repo_id": repo_id, "token": self.token, **kwargs})
        return RepoUrl(f"https://huggingface.co/datasets/{repo_id}")

    def upload_file(self, **kwargs):
        pushed["upload_file"].append({"token": self.token, **kwargs})

    def push_to_hub(self, repo_id, **kwargs):
        pushed["dataset"].append({"repo_id": repo_id, "rows": self.to_list(), **kwargs})

    monkeypatch.setattr(HfApi, "create_repo", create_repo)
    monkeypatch.setattr(HfApi, "upload_file", upload_file)
    monkeypatch.setattr(Dataset, "push_to_hub", push_to_hub)
    return pushed


def _card_tables(text: str) -> dict[str, list[dict[str, str]]]:
    """The card's Markdown tables by section (`## title`), each a list of `{header: cell}`; tables of one section
    follow each other in the list, their rows tagged with their table's first header under `"table"`."""
    sections: dict[str, list[dict[str, str]]] = {}
    section, header = None, None
    for line in text.splitlines():
        if line.startswith("## "):
            section, header = line[3:], None
        elif line.startswith("|") and section is not None:
            cells = [cell.strip() for cell in line.strip("|").split("|")]
            if header is None:
                header = cells
            elif set(line) - set("|-"):
                sections.setdefault(section, []).append({"table": header[0], **dict(zip(header, cells))})
        else:
            header = None
    return sections


def _number(cell: str) -> float:
    return float(cell.replace(",", ""))


def test_the_dataset_card_holds_the_numbers_of_the_run_summary(tmp_path):
    rows = _rows(5)
    # Every call about row 4 is refused (safety: it falls back), every call about row 3 times out (transient: its
    # chunk's rows are incomplete, in both runs).
    failing, flaky, odd = rows[4]["prompt"], rows[3]["prompt"], rows[2]["chosen"][:40]

    def answer(prompt: str) -> dict | None:  # some verdicts fail, some are not verdicts at all
        if '"verdict"' in prompt and "Attribute: relevance" in prompt:
            verdict = "Fail" if "significantly worse" in prompt else "Perhaps"
            return {"analysis": "Other things changed.", "verdict": verdict}
        return None

    config = _config(tmp_path, chunk_size=2, neutral_types=["iqn", "aligned", "paraphrase"], max_cost=100.0)
    for run in ("first", "reused"):  # the second run reads every chunk back: its card says so
        failures = {failing: "safety", flaky: "timeout"}
        oracle = ScriptedOracle(failures=failures, rewrites={odd: rows[2]["chosen"]}, answer=answer)
        augmenter = CromeAugmenter(oracle, config)
        output = augmenter(Dataset.from_list(rows), dataset_name="someone/preferences")
        summary, card = augmenter.summary, augmenter.dataset_card()
        tables = _card_tables(card.text)

        assert card.data.source_datasets == ["someone/preferences"] and "trl-crome" in card.data.tags
        assert "someone/preferences" in card.data.pretty_name
        source = {row[""]: row["value"] for row in tables["Source data"]}
        assert _number(source["rows read"]) == summary.input_rows and _number(source["rows augmented"]) == 5
        oracle_table = {row[""]: row["value"] for row in tables["Oracle"]}
        assert oracle_table == {"backend": "ScriptedOracle", "model": f"`{summary.oracle}`"}
        settings = {row["setting"]: row["value"] for row in tables["Preset and settings"]}
        assert settings["preset"] == f"`{summary.preset}`" == f"`{config.preset}`"
        for name in ("seed", "attributes_per_example", "directions", "verify_rewrites", "max_cost", "chunk_size"):
            value = getattr(config, name)
            assert settings[name] == f"`{', '.join(value) if isinstance(value, list) else value}`", name
        assert not {"output_dir", "cache_dir", "push_to_hub"} & set(settings)  # where the run kept its files: local

        counts = {}
        for row in tables["Counts"]:
            counts.setdefault(row["table"], {})[row[row["table"]]] = _number(row[list(row)[2]])
        assert counts["kind"] == {**summary.pairs, "total": sum(summary.pairs.values())}
        assert counts["kind"] == {k: v for k, v in Counter(output["kind"]).items()} | {"total": len(output)}
        assert counts["type"] == summary.neutrals and len(summary.neutrals) == 3
        assert counts["reason"] == summary.rejects and len(summary.rejects) >= 2  # "safety" and the unchanged rewrite
        verification = summary.verification
        assert counts["verdict"] == {
            "pass": verification["passed"],
            **{f"fail ({d}, {a})": n for d, failed in verification["failed"].items() for a, n in failed.items()},
            **{f"unverified ({reason})": n for reason, n in verification["unverified"].items()},
        }
        assert verification["failed"] and verification["unverified"]
        assert counts[""]["attribute fallbacks (safety)"] == summary.rubric_fallbacks["safety"] == 1
        assert counts[""]["rows incomplete (transient oracle failures)"] == summary.rows_incomplete == 2

        costs = tables["Tokens and cost"]
        steps = {row["step"]: row for row in costs if row["table"] == "step"}
        assert set(steps) == set(summary.steps)
        for step, totals in summary.steps.items():
            assert _number(steps[step]["calls"]) == totals["calls"]
            assert _number(steps[step]["cache hits"]) == totals["cache_hits"]
            assert _number(steps[step]["input tokens"]) == totals["input_tokens"] + totals["cached_input_tokens"]
            assert _number(steps[step]["output tokens"]) == totals["output_tokens"] + totals["cached_output_tokens"]
        totals = {row[""]: _number(row["value"]) for row in costs if row["table"] == ""}
        assert totals["calls (last run)"] == summary.calls and totals["cache hits"] == summary.cache_hits
        assert totals["input tokens (last run)"] == summary.input_tokens
        assert totals["output tokens (last run)"] == summary.output_tokens
        assert totals["cost of the last run (USD)"] == pytest.approx(summary.cost_usd, abs=5e-5)
        assert totals["cost of the cached answers when paid (USD)"] == pytest.approx(summary.cached_cost_usd, abs=5e-5)
        assert totals["total cost of the answers (USD)"] == pytest.approx(summary.spent_usd, abs=5e-5)
        assert summary.spent_usd > 0.001
        # The rerun reads back the two chunks without a transient failure (3 rows); row 3's timeouts are asked again.
        assert summary.rows_reused == (3 if run == "reused" else 0) and (summary.cache_hits > 0) == (run == "reused")

        templates = {row["step"]: row["templates"] for row in tables["Prompt templates"]}
        assert templates == {step: ", ".join(f"`{t}`" for t in names) for step, names in summary.templates.items()}
        columns = [name for row in tables["Columns"] for name in row["column"].split(", ")]
        assert columns == output.column_names


def test_the_card_shows_no_local_path_and_names_no_source_it_was_not_given(tmp_path):
    path = tmp_path / "private" / "prefs.jsonl"
    path.parent.mkdir()
    path.write_text("".join(json.dumps(row) + "\n" for row in _rows(2)))
    data = load_dataset("json", data_files=str(path), split="train", cache_dir=str(tmp_path / "hf"))
    augmenter = CromeAugmenter(ScriptedOracle(), _config(tmp_path / "run", preset="lite"))
    augmenter(data)
    card = augmenter.dataset_card()  # `data.info` only knows the "json" builder: not a source to name
    assert card.data.source_datasets is None and "a preference data set" in card.text and "`json`" not in card.text

    augmenter(data, dataset_name=str(path))
    tokenizer = tmp_path / "private" / "my-tokenizer"
    tokenizer.mkdir()
    config = dataclasses.replace(augmenter.config, length_tokenizer=str(tokenizer))
    card = dataset_card(augmenter.summary, config, str(path), "ScriptedOracle")
    settings = {row["setting"]: row["value"] for row in _card_tables(card.text)["Preset and settings"]}
    assert settings["length_tokenizer"] == "`my-tokenizer`" and "`prefs.jsonl` (a local file)" in card.text
    assert "private" not in card.text and card.data.source_datasets is None


def test_push_to_hub_uploads_the_output_rows_and_the_card_with_the_token_of_the_login(tmp_path, monkeypatch, caplog):
    """The Hub cannot be reached from CI: its network calls are replaced by recorders (`mock_hub`), which see what
    would be uploaded."""
    pushed = mock_hub(monkeypatch)
    caplog.set_level(logging.DEBUG)
    data = Dataset.from_list(_rows(3))
    config = _config(tmp_path, chunk_size=2, push_to_hub="someone/crome", hub_private_repo=True)
    augmenter = CromeAugmenter(ScriptedOracle(), config)
    output = augmenter(data)  # pushed when the run completes
    (data_push,) = pushed["dataset"]
    assert data_push["repo_id"] == "someone/crome" and data_push["private"] is True
    assert data_push["rows"] == output.to_list() and len(output) > 3
    assert (
        data_push["token"] is None and pushed["create_repo"][0]["token"] is None
    )  # the login's token, read by the Hub client
    (card_upload,) = pushed["upload_file"]
    assert card_upload["path_or_fileobj"].decode() == str(augmenter.dataset_card())

    # Again by hand, with a token: it goes to the Hub client only, never to a log.
    token = "hf_FAKEtokenpassedbyhand0123456789"
    url = augmenter.push_to_hub("someone/other", token=token)
    assert url == "https://huggingface.co/datasets/someone/other"
    assert pushed["dataset"][1]["token"] == token and pushed["create_repo"][1]["token"] == token
    assert pushed["dataset"][1]["private"] is None  # the Hub's default
    assert token not in caplog.text and token not in str(augmenter.dataset_card())

    # Stopped at max_cost: partial, so not pushed.
    capped = CromeAugmenter(
        ScriptedOracle(), _config(tmp_path / "capped", chunk_size=2, push_to_hub="a/b", max_cost=0)
    )
    capped(data)
    assert capped.summary.stopped is not None and len(pushed["dataset"]) == 2
    assert "Not pushed to a/b" in caplog.text
