"""GSM8K rows (and, through `svamp`, SVAMP's) for verifiers and for training.

Every row comes out as::

    {"question": str, "answer": "<gold number, commas stripped>", "info": {"solution": str, "id": str}}

and training reads rows as `Problem`s (`Problem.from_row`): the question, the gold number, the
reference solution and an id (`<split>-<line index>` in the source's own order, stable under
shuffling), which travel together through the search, the trainer and the logs.

By default the data loads from the Hugging Face hub (`openai/gsm8k`, config
`main`). A local copy is used instead when a path is given, either as an
argument or through the `GSM8K_PATH` environment variable: a directory holding
`<split>.jsonl` (the layout of openai/grade-school-math), or a file pattern with
`{split}` in it (`data/gsm8k_{split}.jsonl`). One plain file is refused: it would
serve the training questions as the held-out ones. Each JSONL line is an object
with `question` and `answer`, the answer being the reference solution ending in
`#### <number>`.

Three disjoint splits (`load_splits`): **train** (trained on), **dev** (taken from the
data set's train split by a seeded draw that does not depend on the run's seed or
size, never trained on; every tuning choice is made on it) and **test** (the data
set's test split, reported once per configuration). SVAMP ships no split: `svamp.split`
draws all three from its one file. `dataset_splits` gives either data set's splits, as
`dataset.kind` names it.
"""

from __future__ import annotations

import json
import logging
import os
import random
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from datasets import Dataset

    from alphazero_llm.config import DatasetConfig

logger = logging.getLogger(__name__)

PATH_ENV_VAR = "GSM8K_PATH"
HUB_NAME = "openai/gsm8k"
HUB_CONFIG = "main"

_GOLD = re.compile(r"^-?\d+(?:\.\d+)?$")


@dataclass(frozen=True)
class Problem:
    """One question with everything any consumer needs; nothing is looked up again by question text."""

    question: str
    gold: str  # the gold number, commas stripped
    solution: str  # the reference solution, ending in `#### <gold>`
    id: str

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> Problem:
        """A row of `load_gsm8k` (or any {question, answer, info: {solution, id}} mapping)."""
        info = row["info"]
        return cls(question=row["question"], gold=str(row["answer"]), solution=info["solution"], id=str(info["id"]))


class DataError(ValueError):
    """A GSM8K source is missing or malformed; the message names the file and line."""


@dataclass(frozen=True)
class Gsm8kSource:
    """Where rows come from: a local path, else the hub dataset `name`/`config`."""

    path: str | None = None
    name: str = HUB_NAME
    config: str = HUB_CONFIG

    @classmethod
    def resolve(cls, path: str | None, name: str = HUB_NAME, config: str = HUB_CONFIG) -> Gsm8kSource:
        """An explicit path wins over `$GSM8K_PATH`, which wins over the hub."""
        chosen = path if path is not None else os.environ.get(PATH_ENV_VAR) or None
        return cls(path=chosen, name=name, config=config)


def gold_from_solution(solution: str, where: str) -> str:
    """The number after the last `####` of a reference solution, commas stripped."""
    marker = solution.rfind("####")
    if marker < 0:
        raise DataError(f"{where}: the answer has no '#### <number>' line")
    gold = solution[marker + 4 :].strip().replace(",", "")
    if not _GOLD.match(gold):
        raise DataError(f"{where}: the gold answer {gold!r} after '####' is not a number")
    return gold


def to_row(record: Any, where: str, row_id: str) -> dict[str, Any]:
    """One raw GSM8K record -> a verifiers row with id `row_id`, or a DataError naming `where`."""
    if not isinstance(record, Mapping):
        raise DataError(f"{where}: expected a JSON object, got {type(record).__name__}")
    question, solution = record.get("question"), record.get("answer")
    for key, value in (("question", question), ("answer", solution)):
        if not isinstance(value, str) or not value.strip():
            raise DataError(f"{where}: missing or empty string field {key!r}")
    return {
        "question": question.strip(),
        "answer": gold_from_solution(solution, where),
        "info": {"solution": solution, "id": row_id},
    }


def read_jsonl(file: Path, split: str) -> list[dict[str, Any]]:
    """All rows of one GSM8K JSONL file (ids `<split>-<index>`); blank lines are skipped, anything else
    malformed raises."""
    if not file.is_file():
        raise DataError(f"{file}: GSM8K file not found")
    rows = []
    with file.open(encoding="utf-8") as handle:
        for lineno, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            where = f"{file}:{lineno}"
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                raise DataError(f"{where}: invalid JSON: {exc.msg}") from exc
            rows.append(to_row(record, where, f"{split}-{len(rows)}"))
    if not rows:
        raise DataError(f"{file}: no rows")
    return rows


def local_split_file(path: Path, split: str) -> Path:
    """`<path>/<split>.jsonl` for a directory, `path` with `{split}` filled in for a pattern.

    One plain file is refused (a DataError that says why): every split would be the same questions,
    so a "held-out" evaluation would score training questions.
    """
    if "{split}" in str(path):
        return Path(str(path).replace("{split}", split))
    if path.is_file():
        raise DataError(
            f"{path}: one file would serve every split, so the held-out questions would be training questions; "
            "give a directory holding <split>.jsonl, or a pattern naming each split's file ('data/{split}.jsonl')"
        )
    return path / f"{split}.jsonl"


def _hub_rows(source: Gsm8kSource, split: str) -> Iterable[dict[str, Any]]:
    from datasets import load_dataset

    hub = load_dataset(source.name, source.config, split=split)
    for index, record in enumerate(hub):
        yield to_row(record, f"{source.name}[{split}] row {index}", f"{split}-{index}")


def load_gsm8k(
    split: str,
    source: Gsm8kSource,
    num_examples: int = -1,
    shuffle: bool = False,
    seed: int = 0,
) -> Dataset:
    """GSM8K `split` as a verifiers Dataset, optionally seeded-shuffled, then cut to `num_examples` (-1: all)."""
    from datasets import Dataset

    if num_examples < -1:
        raise ValueError(f"num_examples must be -1 (all) or >= 0, got {num_examples}")
    if source.path is not None:
        file = local_split_file(Path(source.path).expanduser(), split)
        rows = read_jsonl(file, split)
        logger.info("Loaded %d GSM8K rows from %s", len(rows), file)
    else:
        rows = list(_hub_rows(source, split))
        logger.info("Loaded %d GSM8K rows from the hub (%s/%s, %s)", len(rows), source.name, source.config, split)
    dataset = Dataset.from_list(rows)
    if shuffle:
        dataset = dataset.shuffle(seed=seed)
    if num_examples != -1:
        dataset = dataset.select(range(min(num_examples, len(dataset))))
    return dataset


@dataclass(frozen=True)
class Splits:
    """Three disjoint lists of rows (module docstring), and where they came from (for messages)."""

    train: list[dict[str, Any]]
    dev: list[dict[str, Any]]
    test: list[dict[str, Any]]
    source: str = ""

    def named(self, split: str) -> list[dict[str, Any]]:
        if split not in ("train", "dev", "test"):
            raise ValueError(f"unknown split {split!r}; valid: train, dev, test")
        return getattr(self, split)


def load_splits(source: Gsm8kSource, config: DatasetConfig, seed: int) -> Splits:
    """train / dev / test rows: dev is `config.num_dev_examples` rows of the train split drawn with
    `config.split_seed`; train is the rest, shuffled with `seed` (when `config.shuffle`) and cut to
    `config.num_train_examples` (-1: all); test is `config.eval_split`."""
    train_split, num_dev = config.train_split, config.num_dev_examples
    pool = list(load_gsm8k(train_split, source))
    if not 0 <= num_dev < len(pool):
        raise DataError(
            f"{num_dev} dev questions leave none of the {len(pool)} rows of split {train_split!r} to train on; "
            "hold out fewer (--dev-size, dataset.num_dev_examples)"
        )
    drawn = random.Random(config.split_seed).sample(range(len(pool)), len(pool))
    dev = [pool[i] for i in sorted(drawn[:num_dev])]
    train = [pool[i] for i in sorted(drawn[num_dev:])]
    test = list(load_gsm8k(config.eval_split, source))
    return _checked(_cut(train, config, seed), dev, test, str(source))


def dataset_splits(config: DatasetConfig, seed: int) -> Splits:
    """train / dev / test of the data set `config.kind` names: GSM8K (`load_splits`, from `config.path`, else
    `$GSM8K_PATH`, else the hub) or SVAMP (`svamp.split` of `config.path`, else `$SVAMP_PATH`), the train rows
    shuffled with `seed` (when `config.shuffle`) and cut to `config.num_train_examples`."""
    if config.kind == "gsm8k":
        return load_splits(Gsm8kSource.resolve(config.path, config.name, config.config), config, seed)
    from alphazero_llm import svamp

    file = svamp.resolve_file(config.path)
    parts = svamp.split(svamp.read_rows(file), config.split_seed, file)
    sizes = (len(parts.train), len(parts.dev), len(parts.test))
    logger.info("Loaded SVAMP from %s: %d train, %d dev, %d test rows", file, *sizes)
    return _checked(_cut(parts.train, config, seed), parts.dev, parts.test, str(file))


def _cut(train: list[dict[str, Any]], config: DatasetConfig, seed: int) -> list[dict[str, Any]]:
    if config.shuffle:
        random.Random(seed).shuffle(train)
    return train if config.num_train_examples == -1 else train[: config.num_train_examples]


def _checked(train: list[dict[str, Any]], dev: list[dict[str, Any]], test: list[dict[str, Any]], source: str) -> Splits:
    held_out = {r["question"] for r in dev} | {r["question"] for r in test}
    leaked = sum(1 for r in train if r["question"] in held_out)
    if leaked:
        raise DataError(f"{leaked} training questions are also dev or test questions in {source}")
    return Splits(train, dev, test, source)
