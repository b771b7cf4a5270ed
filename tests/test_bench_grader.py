"""bench/bench_grader.py's math-verify baseline, graded as verifiers' GSM8K taskset grades (verify.py):
the text after the last `####` (the rest of that line), else the whole completion, boxed and verified."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

import pytest

BENCH = Path(__file__).resolve().parents[1] / "bench" / "bench_grader.py"


def load_bench() -> ModuleType:
    spec = importlib.util.spec_from_file_location("bench_grader", BENCH)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


bench = load_bench()


@pytest.mark.parametrize(
    ("completion", "gold", "expected"),
    [
        ("She makes 9 * 2 = 18 dollars.\n#### 18", "18", True),
        ("She makes 9 * 2 = 17 dollars.\n#### 17", "18", False),
        # only the rest of the `####` line is parsed, as is: a trailing period makes it unparseable
        ("#### 18.", "18", False),
        # no `####`: the whole completion is boxed; math-verify reads this one as `s*o*18`, not 18
        ("She sells 16 - 3 - 4 = 9 eggs, so 18", "18", False),
        ("She sells 16 - 3 - 4 = 9 eggs. The answer is 18.", "18", True),
    ],
)
def test_math_verify_grade(completion: str, gold: str, expected: bool) -> None:
    assert bench.math_verify_grade(completion, gold) is expected
