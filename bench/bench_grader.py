"""Benchmark the GSM8K grader against lm-eval's flexible-extract, in one run, on the same inputs.

    python bench/bench_grader.py [--repeats 5] [--dataset-path DIR]

Inputs: the labelled completions of tests/test_answers.py (`CASES`) and the 8,792 gold solutions
of GSM8K's train and test splits, whole and with their `#### N` line removed. GSM8K is found as the
library finds it (training/run.py): `--dataset-path`, else training.yaml's `dataset.path`, else
$GSM8K_PATH, else the hub (`GSM8K_PATH=../shared/data/gsm8k` beside the shared data). A local copy
that is missing or malformed stops the bench (exit 1, one line saying which file); when the hub
cannot be reached, the bench says so and benchmarks the table only. Prints throughput (answers
per second, median over the repeats) of both graders, their ratio, and each grader's agreement with
the expected labels.

The baseline is lm-eval's GSM8K "flexible-extract" filter: the last match of
`(-?[$0-9.,]{2,})|(-?[0-9]+)`, then exact string match after removing `,`, `$`, everything up
to `#### ` and a trailing `.` (the task's `regexes_to_ignore`), case-insensitively.
"""

from __future__ import annotations

import argparse
import importlib.util
import re
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from types import ModuleType

from alphazero_llm.answers import answers_match, extract_answer
from alphazero_llm.config import load_config, override
from alphazero_llm.data import DataError, Gsm8kSource, load_gsm8k

TESTS_FILE = Path(__file__).resolve().parents[1] / "tests" / "test_answers.py"

_LM_EVAL_FLEXIBLE = re.compile(r"(-?[$0-9.,]{2,})|(-?[0-9]+)")
_LM_EVAL_IGNORE = [re.compile(p) for p in (",", r"\$", r"(?s).*#### ", r"\.$")]

Grader = Callable[[str, str], bool]


def _lm_eval_normalise(text: str) -> str:
    for pattern in _LM_EVAL_IGNORE:
        text = pattern.sub("", text)
    return text.strip().lower()


def baseline_grade(completion: str, gold: str) -> bool:
    """lm-eval gsm8k flexible-extract + exact_match."""
    matches = _LM_EVAL_FLEXIBLE.findall(completion)
    if not matches:
        return False  # lm-eval's "[invalid]"
    predicted = next(group for group in matches[-1] if group)
    return _lm_eval_normalise(predicted) == _lm_eval_normalise(gold)


def our_grade(completion: str, gold: str) -> bool:
    return answers_match(extract_answer(completion), gold)


def gsm8k_source(dataset_path: str | None) -> Gsm8kSource:
    """Where GSM8K comes from, as the library decides it: the flag, else training.yaml's dataset.path,
    else $GSM8K_PATH, else the hub."""
    ds = override(load_config().training.dataset, {"path": dataset_path})
    return Gsm8kSource.resolve(ds.path, ds.name, ds.config)


def gold_solutions(source: Gsm8kSource) -> list[tuple[str, str]]:
    """(reference solution, gold number) for every row of GSM8K's train and test splits, as the library reads them."""
    return [
        (row["info"]["solution"], row["answer"]) for split in ("train", "test") for row in load_gsm8k(split, source)
    ]


def _load_tests_module() -> ModuleType:
    # The labelled table lives with the tests; load that file by path (tests/ is not a package).
    spec = importlib.util.spec_from_file_location("gsm8k_answer_cases", TESTS_FILE)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load {TESTS_FILE}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _throughput(grader: Grader, items: Sequence[tuple[str, str]], repeats: int) -> float:
    """Median answers per second over `repeats` passes (after one warm-up pass)."""
    for completion, gold in items:
        grader(completion, gold)
    seconds = []
    for _ in range(repeats):
        start = time.perf_counter()
        for completion, gold in items:
            grader(completion, gold)
        seconds.append(time.perf_counter() - start)
    return len(items) / statistics.median(seconds)


def _agreement(grader: Grader, labelled: Sequence[tuple[str, str, bool]]) -> float:
    return sum(grader(completion, gold) is expected for completion, gold, expected in labelled) / len(labelled)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument(
        "--dataset-path",
        default=None,
        help="local GSM8K: a directory holding train.jsonl and test.jsonl, or a pattern with {split} "
        "(default: training.yaml's dataset.path, else $GSM8K_PATH, else the hub)",
    )
    args = parser.parse_args()

    tests = _load_tests_module()
    table = [(completion, gold, expected) for _, completion, gold, expected in tests.CASES]
    labelled_sets = {"table": table}
    source = gsm8k_source(args.dataset_path)
    where = source.path if source.path is not None else f"the hub ({source.name}/{source.config})"
    try:
        solutions = gold_solutions(source)
    except DataError as error:  # a local copy was asked for and is missing or malformed
        sys.exit(f"bench_grader: GSM8K not loaded: {error}")
    except OSError as error:  # the hub: unreachable, or not cached
        print(
            f"GSM8K not loaded from {where} ({type(error).__name__}: {error}); pass --dataset-path or set "
            f"GSM8K_PATH. Benchmarking the table only."
        )
        solutions = []
    if solutions:
        labelled_sets["gold solutions"] = [(s, g, True) for s, g in solutions]
        labelled_sets["gold without ####"] = [(s[: s.rindex("####")], g, True) for s, g in solutions]

    items = [(completion, gold) for completion, gold, _ in table] + solutions
    graders: dict[str, Grader] = {"ours": our_grade, "lm-eval flexible": baseline_grade}
    print(
        f"{len(items)} inputs ({len(table)} table completions + {len(solutions)} gold solutions from {where}), "
        f"median of {args.repeats} repeats"
    )
    speed = {name: _throughput(grader, items, args.repeats) for name, grader in graders.items()}
    for name, answers_per_second in speed.items():
        print(f"  {name:18s} {answers_per_second:12,.0f} answers/s  ({1e6 / answers_per_second:6.1f} us each)")
    print(f"  ratio ours / baseline: {speed['ours'] / speed['lm-eval flexible']:.3f}")

    print("agreement with the expected labels:")
    for set_name, labelled in labelled_sets.items():
        scores = "  ".join(f"{name}: {_agreement(grader, labelled):7.2%}" for name, grader in graders.items())
        print(f"  {set_name:18s} (n={len(labelled):5d})  {scores}")


if __name__ == "__main__":
    main()
