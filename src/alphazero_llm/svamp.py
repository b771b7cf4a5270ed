"""SVAMP (Patel et al. 2021, MIT): 1,000 one- and two-operation word problems, as rows like GSM8K's.

A record (`SVAMP.json`, a JSON array) holds `ID`, `Body`, `Question`, `Equation` ("( 76.0 - 25.0 )")
and `Answer` (a float). Each becomes the row shape of `data` ({question, answer, info: {solution, id}}):

- the question is `Body` + " " + `Question`;
- the gold is `Answer` written as the grader reads numbers ("51", "2.5");
- the reference solution is worked from `Equation`, one line per operation, innermost first, then
  the answer line, as GSM8K's solutions end (`worked_solution`)::

      692 + 692 = 1384
      1384 - 458 = 926
      #### 926

  (an equation that is a bare number gives the answer line alone), so the reference teacher, SFT and
  `worked.worked_answer` read it as they read GSM8K's. The equation is parsed (Python's `ast`, numbers
  and + - * / only), never evaluated as code, and its exact value must equal `Answer`. A record whose
  two disagree is left out with a warning naming it: the data set contradicts itself there (chal-680:
  "4 apples, picked 2, 3 grew", Equation ( 4 - 2 ) + 3, Answer 1), and no rule can tell which of the
  two is the gold. Any other fault (a missing field, an equation that does not parse) is a `DataError`
  naming the file and the ID.

The data set ships no split. `split` draws one from the rows in file order with `split_seed`: a
seeded permutation whose first `TEST_SIZE` rows are **test**, the next `DEV_SIZE` **dev**, and the
rest **train** (300 / 100 / 599 of the 999 consistent records); the split is a function of the file
and the seed alone.

Where it loads from: a path (`--dataset-path`, the env argument `dataset_path`), else `$SVAMP_PATH`:
the `SVAMP.json` file, or a directory holding it (the repository's `../shared/data/svamp`). There is
no hub fallback: no public hub copy could be tested offline here, so none is claimed.
"""

from __future__ import annotations

import ast
import json
import logging
import os
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

from alphazero_llm.data import DataError

logger = logging.getLogger(__name__)

PATH_ENV_VAR = "SVAMP_PATH"
FILE_NAME = "SVAMP.json"
TEST_SIZE = 300
DEV_SIZE = 100

_OPERATORS = {ast.Add: ("+", Fraction.__add__), ast.Sub: ("-", Fraction.__sub__),
              ast.Mult: ("*", Fraction.__mul__), ast.Div: ("/", Fraction.__truediv__)}  # fmt: skip


class AnswerMismatch(DataError):
    """A record's Equation and Answer disagree (module docstring): the record is left out, not the file."""


@dataclass(frozen=True)
class SvampSplits:
    train: list[dict[str, Any]]
    dev: list[dict[str, Any]]
    test: list[dict[str, Any]]


def resolve_file(path: str | None, env: Mapping[str, str] | None = None) -> Path:
    """The SVAMP file: `path`, else `$SVAMP_PATH` (a file, or a directory holding SVAMP.json)."""
    env = os.environ if env is None else env
    chosen = path if path is not None else env.get(PATH_ENV_VAR) or None
    if chosen is None:
        raise DataError(
            f"SVAMP loads from a local copy: give --dataset-path (env argument dataset_path) or set ${PATH_ENV_VAR} "
            f"to {FILE_NAME} or its directory (this repository's is ../shared/data/svamp)"
        )
    file = Path(chosen).expanduser()
    file = file / FILE_NAME if file.is_dir() else file
    if not file.is_file():
        raise DataError(f"{file}: SVAMP file not found")
    return file


def format_number(value: Fraction) -> str:
    """A number as the grader reads it: "51", "-3", "2.5"; a non-terminating quotient to 4 decimals."""
    if value.denominator == 1:
        return str(value.numerator)
    return f"{float(value):.4f}".rstrip("0").rstrip(".")


def worked_solution(equation: str, where: str) -> tuple[str, Fraction]:
    """`equation`'s worked lines and `#### N` (module docstring), and its exact value."""
    try:
        tree = ast.parse(equation, mode="eval").body
    except SyntaxError as exc:
        raise DataError(f"{where}: Equation {equation!r} does not parse") from exc
    lines: list[str] = []

    def walk(node: ast.expr) -> Fraction:
        if isinstance(node, ast.Constant) and isinstance(node.value, int | float) and not isinstance(node.value, bool):
            return Fraction(str(node.value))
        if isinstance(node, ast.BinOp) and type(node.op) in _OPERATORS:
            left, right = walk(node.left), walk(node.right)
            symbol, apply = _OPERATORS[type(node.op)]
            if symbol == "/" and right == 0:
                raise DataError(f"{where}: Equation {equation!r} divides by zero")
            value = apply(left, right)
            lines.append(f"{format_number(left)} {symbol} {format_number(right)} = {format_number(value)}")
            return value
        raise DataError(f"{where}: Equation {equation!r} holds {ast.dump(node)[:40]}; only numbers and + - * /")

    value = walk(tree)  # a bare number (one record, chal-555: "8.0") has no worked line, only its answer
    return "\n".join([*lines, f"#### {format_number(value)}"]), value


def to_row(record: Any, where: str) -> dict[str, Any]:
    """One SVAMP record -> a row (module docstring), or a DataError naming `where` and the record's ID."""
    if not isinstance(record, Mapping):
        raise DataError(f"{where}: expected a JSON object, got {type(record).__name__}")
    record_id = record.get("ID")
    if not isinstance(record_id, str) or not record_id.strip():
        raise DataError(f"{where}: missing or empty string field 'ID'")
    where = f"{where} (ID {record_id})"
    for key in ("Body", "Question", "Equation"):
        if not isinstance(record.get(key), str) or not record[key].strip():
            raise DataError(f"{where}: missing or empty string field {key!r}")
    answer = record.get("Answer")
    if not isinstance(answer, int | float) or isinstance(answer, bool):
        raise DataError(f"{where}: Answer {answer!r} is not a number")
    solution, value = worked_solution(record["Equation"], where)
    if value != Fraction(str(answer)):
        equation = record["Equation"]
        raise AnswerMismatch(f"{where}: Equation {equation!r} gives {format_number(value)}, not Answer {answer}")
    return {
        "question": f"{record['Body'].strip()} {record['Question'].strip()}",
        "answer": format_number(value),
        "info": {"solution": solution, "id": record_id},
    }


def read_rows(file: Path) -> list[dict[str, Any]]:
    """Every consistent record of an SVAMP JSON file as a row, in file order (module docstring); duplicate IDs
    are an error."""
    try:
        records = json.loads(file.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise DataError(f"{file}: invalid JSON: {exc.msg} (line {exc.lineno})") from exc
    if not isinstance(records, list) or not records:
        raise DataError(f"{file}: expected a non-empty JSON array of SVAMP records")
    rows = []
    for index, record in enumerate(records):
        try:
            rows.append(to_row(record, f"{file} record {index}"))
        except AnswerMismatch as exc:
            logger.warning("%s; the record is left out", exc)
    seen: set[str] = set()
    for row in rows:
        if row["info"]["id"] in seen:
            raise DataError(f"{file}: ID {row['info']['id']} appears twice")
        seen.add(row["info"]["id"])
    return rows


def split(rows: Sequence[dict[str, Any]], split_seed: int, source: Path) -> SvampSplits:
    """test / dev / train by a `split_seed` permutation of the file's records (module docstring), each in file
    order."""
    if len(rows) <= TEST_SIZE + DEV_SIZE:
        raise DataError(f"{source}: {len(rows)} records leave none to train on after {TEST_SIZE} test + {DEV_SIZE} dev")
    drawn = random.Random(split_seed).sample(range(len(rows)), len(rows))
    test, dev, train = drawn[:TEST_SIZE], drawn[TEST_SIZE : TEST_SIZE + DEV_SIZE], drawn[TEST_SIZE + DEV_SIZE :]
    return SvampSplits(*([rows[i] for i in sorted(part)] for part in (train, dev, test)))
