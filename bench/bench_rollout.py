"""What rollouts cost: one tree search per question with `mcts.rollout` on (the default) and off.

    GSM8K_PATH=../shared/data/gsm8k python bench/bench_rollout.py [--questions 3] [--repeats 1]

Both arms run the run's own MCTS source (`training.assembly`: the embedded SmolLM2 student policy,
the reference teacher, rules-only terminal checks) with the CPU search budget of training.yaml, on
the same GSM8K train questions with the same seeds; only `mcts.rollout` differs. Prints, per arm,
the median search time per question, the student's sampled tokens and the share of trajectories
whose HRE is known (graded: finished, or rolled out), and the ratio of the two times.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import random
import statistics
from contextlib import ExitStack

from alphazero_llm.config import load_config, override
from alphazero_llm.data import Gsm8kSource, Problem, load_splits
from alphazero_llm.mcts.reference_teacher import ReferenceTeacher
from alphazero_llm.models.student import StudentModel, StudentSpec
from alphazero_llm.models.terminal import TerminalChecker
from alphazero_llm.training.assembly import policy_factory
from alphazero_llm.training.sources import MCTSSource


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--questions", type=int, default=3)
    p.add_argument("--repeats", type=int, default=1)
    p.add_argument("--dataset-path", default=None)
    return p.parse_args()


def main() -> None:
    args = parse_args()
    base = load_config().for_device("cpu")
    ds = override(base.training.dataset, {"path": args.dataset_path})
    rows = load_splits(Gsm8kSource.resolve(ds.path, ds.name, ds.config), ds, base.training.seed).train
    problems = [Problem.from_row(r) for r in rows[: args.questions]]
    student = StudentModel.load(StudentSpec(name="embedded", device="cpu"), base.models)
    terminal = TerminalChecker.rules_only(base.teachers.terminal_checker)
    results: dict[bool, dict[str, list[float]]] = {}
    with ExitStack() as stack:
        loop = asyncio.new_event_loop()
        stack.callback(loop.close)
        for rollout in (False, True):
            training = override(base.training, {"mcts.rollout": rollout})
            config = dataclasses.replace(base, training=training)
            source = MCTSSource(
                loop, policy_factory(student, config), ReferenceTeacher(), terminal, training.mcts, training.rewards
            )
            stats: dict[str, list[float]] = {"seconds": [], "student_tokens": [], "graded": []}
            for _ in range(args.repeats):
                for step, problem in enumerate(problems):
                    group = source(problem, random.Random(step), step)
                    graded = sum(t.hre is not None for t in group.trajectories) / max(1, len(group.trajectories))
                    stats["seconds"].append(group.metrics["search_s"])
                    stats["student_tokens"].append(group.metrics["student_tokens"])
                    stats["graded"].append(graded)
            results[rollout] = stats
    print(f"{len(problems)} GSM8K train questions x {args.repeats}, CPU search budget, reference teacher + student")
    print("arm          search s (median)  student tokens (median)  trajectories graded (mean)")
    for rollout, stats in results.items():
        name = "rollouts on" if rollout else "rollouts off"
        seconds, tokens = statistics.median(stats["seconds"]), statistics.median(stats["student_tokens"])
        print(f"{name:<12} {seconds:>17.1f}  {tokens:>23.0f}  {statistics.fmean(stats['graded']):>26.0%}")
    ratio = statistics.median(results[True]["seconds"]) / statistics.median(results[False]["seconds"])
    print(f"search time, rollouts on / off: {ratio:.2f}x")


if __name__ == "__main__":
    main()
