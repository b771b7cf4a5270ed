"""SVAMP as a data set: worked reference solutions from its equations, errors that name the record, the seeded split."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
from pathlib import Path

import pytest

from alphazero_llm import svamp
from alphazero_llm.config import load_config
from alphazero_llm.data import DataError, Problem, dataset_splits
from alphazero_llm.mcts.reference_teacher import solution_lines
from alphazero_llm.rewards import hre_score
from alphazero_llm.worked import worked_answer


def record(**changes) -> dict:
    base = {"ID": "chal-1", "Body": "Each pack of dvds costs 76 dollars. If there is a discount of 25 dollars",
            "Question": "How much do you pay?", "Equation": "( 76.0 - 25.0 )", "Answer": 51.0, "Type": "Subtraction"}  # fmt: skip
    return {**base, **changes}


def write(tmp_path: Path, records: list) -> Path:
    file = tmp_path / svamp.FILE_NAME
    file.write_text(json.dumps(records), encoding="utf-8")
    return file


def test_a_record_becomes_a_row_with_a_worked_solution() -> None:
    row = svamp.to_row(record(), "SVAMP.json record 0")
    assert row == {
        "question": "Each pack of dvds costs 76 dollars. If there is a discount of 25 dollars How much do you pay?",
        "answer": "51",
        "info": {"solution": "76 - 25 = 51\n#### 51", "id": "chal-1"},
    }
    problem = Problem.from_row(row)
    assert solution_lines(problem.solution) == ["76 - 25 = 51", "#### 51"]  # what the reference teacher proposes
    assert worked_answer(problem.solution) and hre_score(problem.solution, problem.gold) == 1.0


@pytest.mark.parametrize(
    ("equation", "answer", "solution"),
    [
        ("( ( 692.0 + 692.0 ) - 458.0 )", 926.0, "692 + 692 = 1384\n1384 - 458 = 926\n#### 926"),
        ("( 6.0 - ( 3.0 + 2.0 ) )", 1.0, "3 + 2 = 5\n6 - 5 = 1\n#### 1"),
        ("( ( 4.0 + 13.0 ) * 15.0 )", 255.0, "4 + 13 = 17\n17 * 15 = 255\n#### 255"),
        ("( 5.0 / 2.0 )", 2.5, "5 / 2 = 2.5\n#### 2.5"),
        ("8.0", 8.0, "#### 8"),  # chal-555: the answer is in the story
    ],
)
def test_worked_solution_one_line_per_operation_innermost_first(equation: str, answer: float, solution: str) -> None:
    row = svamp.to_row(record(Equation=equation, Answer=answer), "here")
    assert row["info"]["solution"] == solution
    assert hre_score(solution, row["answer"]) == 1.0


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"Body": ""}, "missing or empty string field 'Body'"),
        ({"Question": None}, "missing or empty string field 'Question'"),
        ({"Answer": "51"}, "Answer '51' is not a number"),
        ({"Equation": "( 76.0 - "}, "does not parse"),
        ({"Equation": "__import__('os')"}, "only numbers and"),
        ({"Equation": "( 4.0 / 0.0 )"}, "divides by zero"),
    ],
)
def test_a_malformed_record_is_an_error_naming_the_file_and_the_id(tmp_path: Path, changes: dict, message: str) -> None:
    file = write(tmp_path, [record(ID="chal-1"), record(ID="chal-7", **changes)])
    with pytest.raises(DataError, match=message) as info:
        svamp.read_rows(file)
    assert str(file) in str(info.value) and "ID chal-7" in str(info.value) and "record 1" in str(info.value)


def test_file_level_faults_are_errors(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="missing or empty string field 'ID'"):
        svamp.read_rows(write(tmp_path, [record(ID="")]))
    with pytest.raises(DataError, match="ID chal-1 appears twice"):
        svamp.read_rows(write(tmp_path, [record(), record()]))
    with pytest.raises(DataError, match="non-empty JSON array"):
        svamp.read_rows(write(tmp_path, {"ID": "x"}))
    (tmp_path / "bad.json").write_text("[{", encoding="utf-8")
    with pytest.raises(DataError, match="invalid JSON"):
        svamp.read_rows(tmp_path / "bad.json")


def test_an_equation_that_contradicts_its_answer_is_left_out_with_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    file = write(tmp_path, [record(ID="chal-1"), record(ID="chal-2", Equation="( ( 4.0 - 2.0 ) + 3.0 )", Answer=1.0)])
    with caplog.at_level(logging.WARNING):
        rows = svamp.read_rows(file)
    assert [r["info"]["id"] for r in rows] == ["chal-1"]
    assert "ID chal-2" in caplog.text and "gives 5, not Answer 1.0" in caplog.text


def test_where_svamp_loads_from(tmp_path: Path) -> None:
    file = write(tmp_path, [record()])
    assert svamp.resolve_file(str(tmp_path), env={}) == file  # a directory holding SVAMP.json
    assert svamp.resolve_file(None, env={svamp.PATH_ENV_VAR: str(file)}) == file
    assert svamp.resolve_file(str(file), env={svamp.PATH_ENV_VAR: "/elsewhere"}) == file  # the explicit path wins
    with pytest.raises(DataError, match=svamp.PATH_ENV_VAR):
        svamp.resolve_file(None, env={})
    with pytest.raises(DataError, match="not found"):
        svamp.resolve_file(str(tmp_path / "nowhere.json"), env={})


def svamp_config(file: Path, **changes):
    return dataclasses.replace(load_config().training.dataset, kind="svamp", path=str(file), **changes)


def test_the_real_file_every_reference_solution_is_worked_and_graded_right(svamp_file: Path) -> None:
    rows = svamp.read_rows(svamp_file)
    assert len(rows) == 999  # chal-680 contradicts itself and is left out
    assert all(hre_score(r["info"]["solution"], r["answer"]) == 1.0 for r in rows)
    assert sum(not worked_answer(r["info"]["solution"]) for r in rows) == 1  # chal-555, "#### 8" alone


def test_the_split_is_a_function_of_the_file_and_the_seed(svamp_file: Path, tmp_path: Path) -> None:
    splits = dataset_splits(svamp_config(svamp_file, num_train_examples=-1, shuffle=False), seed=1)
    ids = {name: [r["info"]["id"] for r in getattr(splits, name)] for name in ("train", "dev", "test")}
    assert [len(v) for v in ids.values()] == [599, svamp.DEV_SIZE, svamp.TEST_SIZE]
    assert not set(ids["train"]) & set(ids["dev"]) and not set(ids["train"]) & set(ids["test"])
    assert not set(ids["dev"]) & set(ids["test"])
    # Pinned: the test split of split_seed 0 never changes unnoticed (its numbers are reported once).
    digest = hashlib.sha256(",".join(ids["test"]).encode()).hexdigest()[:16]
    assert digest == PINNED_TEST_DIGEST, digest
    # The run's seed shuffles the training order only; the held-out splits stay.
    again = dataset_splits(svamp_config(svamp_file, num_train_examples=-1), seed=7)
    assert [r["info"]["id"] for r in again.test] == ids["test"] and sorted(
        r["info"]["id"] for r in again.train
    ) == sorted(ids["train"])
    other = dataset_splits(svamp_config(svamp_file, split_seed=1), seed=1)
    assert [r["info"]["id"] for r in other.test] != ids["test"]
    # The same records in a copy of the file split the same way.
    copy = tmp_path / svamp.FILE_NAME
    copy.write_bytes(svamp_file.read_bytes())
    assert [r["info"]["id"] for r in dataset_splits(svamp_config(copy), seed=1).test] == ids["test"]


PINNED_TEST_DIGEST = "0bfae2d5a4be7738"
