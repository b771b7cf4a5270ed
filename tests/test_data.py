"""GSM8K data layer: real files, local overrides, seeded shuffles and errors that name file and line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from alphazero_llm import data
from alphazero_llm.config import load_config, override
from alphazero_llm.data import DataError, Gsm8kSource, load_gsm8k, load_splits

MINI = Path(__file__).resolve().parent / "fixtures" / "gsm8k_mini"


def test_real_files_load_completely(gsm8k_dir: Path):
    source = Gsm8kSource(path=str(gsm8k_dir))
    train, test = load_gsm8k("train", source), load_gsm8k("test", source)
    assert (len(train), len(test)) == (7473, 1319)
    first = test[0]
    assert first["question"].startswith("Janet")
    assert first["answer"] == "18"
    assert first["info"]["solution"].endswith("#### 18")
    assert set(first) == {"question", "answer", "info"}


def test_gold_commas_are_stripped(gsm8k_dir: Path):
    test = load_gsm8k("test", Gsm8kSource(path=str(gsm8k_dir)))
    assert test[2]["answer"] == "70000"  # "#### 70000" in the file; the mini fixture covers "1,250,000"
    assert all("," not in gold for gold in test["answer"])


def test_mini_fixture_strips_thousands_separators():
    rows = load_gsm8k("test", Gsm8kSource(path=str(MINI)))
    assert rows[2]["answer"] == "1250000"
    assert rows[2]["info"]["solution"].endswith("#### 1,250,000")


def test_sizes_and_seeded_shuffle():
    source = Gsm8kSource(path=str(MINI))
    a = load_gsm8k("train", source, num_examples=5, shuffle=True, seed=1)
    b = load_gsm8k("train", source, num_examples=5, shuffle=True, seed=1)
    c = load_gsm8k("train", source, num_examples=5, shuffle=True, seed=2)
    assert len(a) == 5
    assert a["question"] == b["question"]
    assert a["question"] != c["question"]
    unshuffled = load_gsm8k("train", source, num_examples=3)
    assert unshuffled["answer"] == ["21", "26", "3750"]
    assert len(load_gsm8k("train", source, num_examples=100)) == 8
    assert len(load_gsm8k("train", source, num_examples=0)) == 0
    with pytest.raises(ValueError, match="num_examples"):
        load_gsm8k("train", source, num_examples=-2)


def test_one_file_for_every_split_is_refused_and_a_split_pattern_is_not():
    """One plain file would serve the training questions as the held-out ones."""
    with pytest.raises(DataError, match="one file would serve every split"):
        load_gsm8k("test", Gsm8kSource(path=str(MINI / "test.jsonl")))
    pattern = Gsm8kSource(path=str(MINI / "{split}.jsonl"))
    assert load_gsm8k("test", pattern)["answer"] == load_gsm8k("test", Gsm8kSource(path=str(MINI)))["answer"]
    assert load_gsm8k("train", pattern)["answer"] != load_gsm8k("test", pattern)["answer"]


def test_splits_are_disjoint_seeded_and_dev_does_not_depend_on_the_run(gsm8k_dir: Path):
    source = Gsm8kSource(path=str(gsm8k_dir))

    def splits(seed: int = 1, **changes):
        dataset = {"dataset.num_dev_examples": 100, "dataset.split_seed": 0, "dataset.num_train_examples": 50}
        config = override(load_config().training, {**dataset, **{f"dataset.{k}": v for k, v in changes.items()}})
        return load_splits(source, config.dataset, seed)

    first = splits()
    ids = {name: {r["info"]["id"] for r in first.named(name)} for name in ("train", "dev", "test")}
    assert (len(ids["train"]), len(ids["dev"]), len(ids["test"])) == (50, 100, 1319)
    assert not (ids["train"] & ids["dev"]) and not (ids["train"] & ids["test"]) and not (ids["dev"] & ids["test"])
    questions = {r["question"] for r in first.train}
    assert not questions & {r["question"] for r in first.dev + first.test}
    again = splits()
    assert [r["info"]["id"] for r in again.dev] == [r["info"]["id"] for r in first.dev]  # a function of file + seed
    other_run = splits(seed=2, num_train_examples=-1)  # another run seed and size: the same dev, a different order
    assert [r["info"]["id"] for r in other_run.dev] == [r["info"]["id"] for r in first.dev]
    assert len(other_run.train) == 7473 - 100 and not {r["info"]["id"] for r in other_run.train} & ids["dev"]
    assert [r["info"]["id"] for r in splits(split_seed=1).dev] != [r["info"]["id"] for r in first.dev]
    with pytest.raises(DataError, match="to train on"):
        splits(num_dev_examples=7473)


def test_environment_variable_selects_local_data(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv(data.PATH_ENV_VAR, str(MINI))
    assert Gsm8kSource.resolve(None).path == str(MINI)
    assert Gsm8kSource.resolve("/explicit/wins").path == "/explicit/wins"
    monkeypatch.delenv(data.PATH_ENV_VAR)
    assert Gsm8kSource.resolve(None).path is None


def test_hub_is_the_default(monkeypatch: pytest.MonkeyPatch):
    calls = []

    def fake_load_dataset(name, config, split):
        calls.append((name, config, split))
        return [{"question": "1 + 1?", "answer": "1 + 1 = 2\n#### 2"}]

    monkeypatch.delenv(data.PATH_ENV_VAR, raising=False)
    monkeypatch.setattr("datasets.load_dataset", fake_load_dataset)
    rows = load_gsm8k("test", Gsm8kSource.resolve(None))
    assert calls == [("openai/gsm8k", "main", "test")]
    assert rows[0]["answer"] == "2"


def write_lines(path: Path, lines: list[str]) -> Path:
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


GOOD = json.dumps({"question": "2 + 2?", "answer": "2 + 2 = 4\n#### 4"})


@pytest.mark.parametrize(
    ("bad_line", "message"),
    [
        ('{"question": "2 + 2?", "answer": ', "invalid JSON"),
        (json.dumps({"question": "2 + 2?"}), "missing or empty string field 'answer'"),
        (json.dumps({"question": "", "answer": "#### 4"}), "missing or empty string field 'question'"),
        (json.dumps({"question": "2 + 2?", "answer": "it is 4"}), "no '#### <number>' line"),
        (json.dumps({"question": "2 + 2?", "answer": "#### four"}), "'four' after '####' is not a number"),
        (json.dumps(["not", "an", "object"]), "expected a JSON object"),
    ],
)
def test_malformed_row_names_file_and_line(tmp_path: Path, bad_line: str, message: str):
    file = write_lines(tmp_path / "test.jsonl", [GOOD, "", GOOD, bad_line, GOOD])
    with pytest.raises(DataError, match=message) as err:
        load_gsm8k("test", Gsm8kSource(path=str(tmp_path)))
    assert f"{file}:4:" in str(err.value)


def test_missing_file_is_named(tmp_path: Path):
    with pytest.raises(DataError, match=r"test\.jsonl: GSM8K file not found"):
        load_gsm8k("test", Gsm8kSource(path=str(tmp_path)))
    with pytest.raises(DataError, match=r"nowhere_test\.jsonl: GSM8K file not found"):
        load_gsm8k("test", Gsm8kSource(path=str(tmp_path / "nowhere_{split}.jsonl")))


def test_empty_file_is_an_error(tmp_path: Path):
    write_lines(tmp_path / "test.jsonl", [""])
    with pytest.raises(DataError, match="no rows"):
        load_gsm8k("test", Gsm8kSource(path=str(tmp_path)))
