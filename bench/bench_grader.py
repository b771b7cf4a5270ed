"""Benchmark the GSM8K grader against two baselines, lm-eval's flexible-extract and math-verify, in one
run, on the same inputs.

    python bench/bench_grader.py [--repeats 5] [--dataset-path DIR]

Inputs: the labelled completions of tests/test_answers.py (`CASES`) and of tests/test_chat_answers.py
(`CHAT_CASES`, chat-style markdown answers), and the 8,792 gold solutions of GSM8K's train and test
splits, whole and with their `#### N` line removed. GSM8K is found as the library finds it
(training/run.py): `--dataset-path`, else training.yaml's `dataset.path`, else $GSM8K_PATH, else the
hub (`GSM8K_PATH=../shared/data/gsm8k` beside the shared data). A local copy that is missing or
malformed stops the bench (exit 1, one line saying which file); when the hub cannot be reached, the
bench says so and benchmarks the tables only. Prints throughput (answers per second, median over the
repeats) of the three graders on the tables plus the whole gold solutions, the ratio of ours to each
baseline, and each grader's agreement with the expected labels, per table and on the gold solutions.

Baseline 1 is lm-eval's GSM8K "flexible-extract" filter: the last match of
`(-?[$0-9.,]{2,})|(-?[0-9]+)`, then exact string match after removing `,`, `$`, everything up
to `#### ` and a trailing `.` (the task's `regexes_to_ignore`), case-insensitively.

Baseline 2 is Hugging Face's math-verify, called as verifiers' own GSM8K taskset calls it
(verifiers 0.4, environments/gsm8k/gsm8k/verify.py): the text after the last `####`, else the whole
completion, is wrapped in `\\boxed{}`, parsed and verified against the boxed gold; an exception
scores 0. math-verify bounds parse and verify with signal-based timeouts, so it runs in the main
thread. Without a `####` line it parses the whole completion, about 40 ms a solution on a small
machine, so on the gold solutions without `####` it is scored on a fixed subset only, every
`MATH_VERIFY_STRIDE`-th solution in split order (all three graders are shown on that subset too).
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
from typing import NamedTuple

from math_verify import parse, verify

from alphazero_llm.answers import answers_match, extract_answer
from alphazero_llm.config import load_config, override
from alphazero_llm.data import DataError, Gsm8kSource, load_gsm8k

TESTS_DIR = Path(__file__).resolve().parents[1] / "tests"
MATH_VERIFY_STRIDE = 8

_LM_EVAL_FLEXIBLE = re.compile(r"(-?[$0-9.,]{2,})|(-?[0-9]+)")
_LM_EVAL_IGNORE = [re.compile(p) for p in (",", r"\$", r"(?s).*#### ", r"\.$")]
_VERIFIERS_HASH_ANSWER = re.compile(r"####\s*(.+)")

Grader = Callable[[str, str], bool]
Labelled = tuple[str, str, bool]  # (completion, gold, expected verdict)


class LabelledSet(NamedTuple):
    name: str
    cases: list[Labelled]
    skip: frozenset[str] = frozenset()  # graders too slow to score on this set


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


def math_verify_grade(completion: str, gold: str) -> bool:
    """math-verify as verifiers' gsm8k verify.py uses it: the last `#### ...`, else the whole completion."""
    matches = _VERIFIERS_HASH_ANSWER.findall(completion)
    prediction = matches[-1].strip() if matches else completion
    try:
        return bool(verify(parse("\\boxed{" + gold + "}"), parse("\\boxed{" + prediction + "}")))
    except Exception:  # verifiers scores any parse or verify failure 0
        return False


def our_grade(completion: str, gold: str) -> bool:
    return answers_match(extract_answer(completion), gold)


GRADERS: dict[str, Grader] = {"ours": our_grade, "lm-eval flexible": baseline_grade, "math-verify": math_verify_grade}


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


def _load_tests_module(name: str) -> ModuleType:
    # The labelled tables live with the tests; load the file by path (tests/ is not a package).
    path = TESTS_DIR / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"bench_{name}", path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load {path}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def answer_table() -> list[Labelled]:
    """tests/test_answers.py's `CASES`: (id, completion, gold, expected match)."""
    return [(completion, gold, expected) for _, completion, gold, expected in _load_tests_module("test_answers").CASES]


def chat_table() -> list[Labelled]:
    """tests/test_chat_answers.py's `CHAT_CASES`: (id, completion, gold, expected score 1.0 or 0.0)."""
    cases = _load_tests_module("test_chat_answers").CHAT_CASES
    return [(completion, gold, score == 1.0) for _, completion, gold, score in cases]


def _load_solutions(source: Gsm8kSource, where: str) -> list[tuple[str, str]]:
    try:
        return gold_solutions(source)
    except DataError as error:  # a local copy was asked for and is missing or malformed
        sys.exit(f"bench_grader: GSM8K not loaded: {error}")
    except OSError as error:  # the hub: unreachable, or not cached
        print(
            f"GSM8K not loaded from {where} ({type(error).__name__}: {error}); pass --dataset-path or set "
            f"GSM8K_PATH. Benchmarking the tables only."
        )
        return []


def gold_sets(solutions: Sequence[tuple[str, str]]) -> list[LabelledSet]:
    """The gold solutions, whole and without their `#### N` line; every one should match its gold."""
    if not solutions:
        return []
    without_marker = [(s[: s.rindex("####")], g, True) for s, g in solutions]
    return [
        LabelledSet("gold solutions", [(s, g, True) for s, g in solutions]),
        LabelledSet("gold without ####", without_marker, skip=frozenset({"math-verify"})),
        LabelledSet(f"  every {MATH_VERIFY_STRIDE}th", without_marker[::MATH_VERIFY_STRIDE]),
    ]


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


def _agreement(grader: Grader, labelled: Sequence[Labelled]) -> float:
    return sum(grader(completion, gold) is expected for completion, gold, expected in labelled) / len(labelled)


def print_throughput(items: Sequence[tuple[str, str]], repeats: int) -> None:
    speed = {name: _throughput(grader, items, repeats) for name, grader in GRADERS.items()}
    for name, answers_per_second in speed.items():
        print(f"  {name:18s} {answers_per_second:12,.0f} answers/s  ({1e6 / answers_per_second:8.1f} us each)")
    for name in ("lm-eval flexible", "math-verify"):
        print(f"  ratio ours / {name}: {speed['ours'] / speed[name]:.3f}")


def print_agreement(sets: Sequence[LabelledSet]) -> None:
    print("agreement with the expected labels:")
    print(f"  {'':22s} {'n':>5s}  " + "".join(f"{name:>18s}" for name in GRADERS))
    for labelled in sets:
        scores = "".join(
            f"{'-' if name in labelled.skip else f'{_agreement(grader, labelled.cases):.2%}':>18s}"
            for name, grader in GRADERS.items()
        )
        print(f"  {labelled.name:22s} {len(labelled.cases):5d}  {scores}")


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

    tables = [LabelledSet("test_answers table", answer_table()), LabelledSet("chat-style table", chat_table())]
    source = gsm8k_source(args.dataset_path)
    where = source.path if source.path is not None else f"the hub ({source.name}/{source.config})"
    solutions = _load_solutions(source, where)

    items = [(completion, gold) for table in tables for completion, gold, _ in table.cases] + solutions
    print(
        f"throughput on {len(items)} inputs ({len(items) - len(solutions)} table completions + {len(solutions)} "
        f"whole gold solutions from {where}), median of {args.repeats} repeats:"
    )
    print_throughput(items, args.repeats)
    print_agreement(tables + gold_sets(solutions))
    if solutions:
        print(
            f"math-verify is not scored on all gold solutions without #### (it parses the whole text, tens of ms "
            f"each); it is scored on every {MATH_VERIFY_STRIDE}th of them, beside the other two."
        )


if __name__ == "__main__":
    main()
