"""Does the tree teach the student more than plain GRPO or SFT? One command trains every arm and compares them.

    SVAMP_PATH=../shared/data/svamp python examples/compare_arms.py                                # dev, 100 questions
    SVAMP_PATH=../shared/data/svamp python examples/compare_arms.py --split test --eval-size 60    # the README's table
    GSM8K_PATH=../shared/data/gsm8k python examples/compare_arms.py --dataset gsm8k --split test --eval-size 200

The defaults (2 seeds, 10 training questions per arm) are the size that fits a 2-core CPU: the README's
run took 36 minutes per seed of all three arms, 70.5 minutes in all.

The arms are `train_vllm.py`'s trajectory sources (`--source`), run by its own `training.run.run` with
one shared config (this script's search, reward and optimiser settings, plus any `--set key=value`):

- **mcts**: the tree search; its teacher is the data set's reference solution (`--reference-teacher only`:
  offline, free) beside the student's own steps, unless `--teacher-mode` says otherwise;
- **sample**: plain GRPO, `sample.group_size` answers of the student per question, no tree, no teacher;
- **sft**: the reference solutions, legacy (NLL) loss.

Every arm of a seed trains on the same training questions in the same order (the run's seed fixes the
shuffle and the sampler), for the same number of examples and so the same number of optimiser steps
(one per example), and is evaluated on the same held-out questions (`--split`: dev while choosing
settings, test once per configuration) with the protocol of `training.evaluation`: greedy, up to
`evaluation.max_new_tokens` (512) tokens, accuracy, the environment's reward (HRE + PRE), truncation.
The untrained student is evaluated once (the LoRA adapter starts at zero, so every arm and seed starts
from it), then every arm's checkpoint at every `--eval-every` examples.

It writes under `--out`: one run directory per seed and arm (checkpoints with their adapters, metrics,
trees), the answer texts of every evaluation (`evals/<split>-<step>`), `comparison-<split>.json` (settings, every
evaluation's per-question outcomes, each arm's budget: optimiser steps, student / teacher / gradient
tokens, wall time; exact McNemar tests of every pair of arms on the same questions, at equal
optimiser steps and at the tree's student-token budget) and `comparison-<split>.png` (held-out accuracy against
training examples per arm and seed, Wilson 95% intervals). Run again with the same `--out`, it trains
only what is missing and evaluates only checkpoints not evaluated yet (by adapter digest).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import math
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from alphazero_llm.config import Config, load_config, override
from alphazero_llm.data import dataset_splits
from alphazero_llm.models.student import StudentModel, StudentSpec
from alphazero_llm.training.checkpoint import list_checkpoints, sha256_file
from alphazero_llm.training.cli import build_parser
from alphazero_llm.training.evaluation import EvalResult, mcnemar_exact
from alphazero_llm.training.run import evaluate, run
from alphazero_llm.training.settings import settle

logger = logging.getLogger("compare_arms")

ARMS = ("mcts", "sample", "sft")
REPORT_FILE = "comparison-{split}.json"
PLOT_FILE = "comparison-{split}.png"
BASE = "base"  # the untrained student's evaluation


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    p.add_argument("--out", type=Path, default=Path("runs/compare"), help="output directory")
    p.add_argument("--dataset", choices=["gsm8k", "svamp"], default="svamp")
    p.add_argument("--dataset-path", default=None, help="local copy (default: $GSM8K_PATH / $SVAMP_PATH)")
    p.add_argument("--arms", nargs="+", choices=ARMS, default=list(ARMS))
    p.add_argument("--seeds", nargs="+", type=int, default=[42, 43], help="one run of every arm per seed")
    p.add_argument("--num-examples", type=int, default=10, help="training questions per arm (one update each)")
    p.add_argument("--eval-every", type=int, default=10, help="examples between held-out evaluations")
    p.add_argument("--split", choices=["dev", "test"], default="dev", help="held-out split: dev while tuning")
    p.add_argument("--eval-size", type=int, default=-1, help="held-out questions, from the split's start; -1: all")
    p.add_argument(
        "--teacher-mode", choices=["reference", "local", "both"], default="reference",
        help="the tree's teachers: the reference solution, the student's base model served on 127.0.0.1, or both",
    )  # fmt: skip
    p.add_argument("--learning-rate", type=float, default=5e-4, help="every arm's LoRA learning rate")
    p.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE",
        help="any training.yaml key for every arm, e.g. mcts.num_iterations=8 or sample.group_size=4 "
        "(the value is read as YAML)",
    )  # fmt: skip
    return p.parse_args(argv)


def experiment_config(args: argparse.Namespace) -> Config:
    """training.yaml's CPU config with the comparison's learning rate and `--set` changes, for every arm and device
    alike (so that `settle` keeps it)."""
    import yaml

    changes: dict[str, Any] = {"optimizer.learning_rate": args.learning_rate, "evaluation.split": args.split}
    for item in args.set:
        key, sep, value = item.partition("=")
        if not sep:
            raise SystemExit(f"--set {item!r}: expected KEY=VALUE")
        changes[key.strip()] = yaml.safe_load(value)
    base = load_config()
    training = override(base.training_on_cpu, changes)
    return dataclasses.replace(base, training=training, training_on_cpu=training)


def arm_dir(args: argparse.Namespace, seed: int, arm: str) -> Path:
    return args.out / f"seed-{seed}" / arm


def train(args: argparse.Namespace, config: Config, seed: int, arm: str) -> None:
    """`train_vllm.py --source <arm>` into the arm's directory; resumed when an earlier call stopped part way."""
    out = arm_dir(args, seed, arm)
    done = [step for step, _ in list_checkpoints(out)]
    if done and done[-1] >= args.num_examples:
        logger.info("%s: trained already (%d examples)", out, done[-1])
        return
    argv = [
        "--source", arm, "--dataset", args.dataset, "--device", "cpu", "--seed", str(seed),
        "--num-examples", str(args.num_examples), "--save-every", str(args.eval_every),
        "--eval-size", "0",  # this script evaluates every checkpoint itself, the untrained student once
        "--checkpoint-dir", str(out), "--keep-last", "0",
    ]  # fmt: skip
    if args.dataset_path:
        argv += ["--dataset-path", args.dataset_path]
    if arm == "mcts":
        argv += {"reference": ["--reference-teacher", "only"], "local": ["--local-teacher"],
                 "both": ["--local-teacher", "--reference-teacher", "also"]}[args.teacher_mode]  # fmt: skip
    if done:
        argv.append("--resume")
    settings = settle(build_parser(config).parse_args(argv), config, "cpu")
    logger.info("train_vllm.py %s", " ".join(argv))
    run(settings)


def held_out_rows(args: argparse.Namespace, config: Config) -> list[dict[str, Any]]:
    """The split's first `--eval-size` rows: the same for every seed (the split does not depend on it)."""
    ds = dataclasses.replace(config.training.dataset, kind=args.dataset, path=args.dataset_path)
    rows = dataset_splits(ds, config.training.seed).named(args.split)
    return rows if args.eval_size == -1 else rows[: args.eval_size]


class Evaluations:
    """Greedy evaluations, cached on disk by adapter digest (module docstring); one student loaded for all."""

    def __init__(self, args: argparse.Namespace, config: Config, rows: Sequence[Mapping[str, Any]]) -> None:
        self.args, self.config, self.rows = args, config, rows
        self._student: StudentModel | None = None
        self.seconds = 0.0

    @property
    def student(self) -> StudentModel:
        if self._student is None:
            self._student = StudentModel.load(StudentSpec(name="embedded", device="cpu"), self.config.models)
        return self._student

    def of(self, directory: Path, name: str, adapter: Path | None) -> tuple[EvalResult, str]:
        """The evaluation of `adapter` (None: the untrained student) as `directory/evals/<name>`, and the digest."""
        digest = sha256_file(adapter / "adapter_model.safetensors") if adapter is not None else BASE
        evals = directory / "evals"
        cache = evals / f"{name}.json"
        key = {"digest": digest, "split": self.args.split, "questions": [r["info"]["id"] for r in self.rows],
               "max_new_tokens": self.config.training.evaluation.max_new_tokens}  # fmt: skip
        if cache.is_file():
            saved = json.loads(cache.read_text(encoding="utf-8"))
            if saved["key"] == key:
                return EvalResult.from_record(saved["result"]), digest
        evals.mkdir(parents=True, exist_ok=True)
        start = time.perf_counter()
        student = self.student
        if adapter is None:
            with student.reference():
                result = evaluate(student, self.rows, self.config, evals, name)
        else:
            student.load_adapter(adapter)
            result = evaluate(student, self.rows, self.config, evals, name)
        self.seconds += time.perf_counter() - start
        cache.write_text(json.dumps({"key": key, "result": result.to_record()}, indent=1), encoding="utf-8")
        return result, digest


def budget(directory: Path, upto: int) -> dict[str, float]:
    """What an arm spent on its first `upto` examples (metrics.jsonl): optimiser steps, tokens, wall time."""
    path = directory / "metrics.jsonl"
    records = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    records = [r for r in records if r["step"] <= upto]
    total = {
        key: math.fsum(float(r.get(key) or 0.0) for r in records)
        for key in ("student_tokens", "teacher_tokens", "grad_tokens", "time_s")
    }
    total["examples"] = len(records)
    total["optimizer_steps"] = sum(1 for r in records if r.get("updated"))
    total["train_reward_mean"] = _mean([r["reward_mean"] for r in records if r.get("reward_mean") is not None])
    return total


def _mean(values: Sequence[float]) -> float | None:
    return math.fsum(values) / len(values) if values else None


def paired(a: EvalResult, b: EvalResult) -> dict[str, Any]:
    """Exact McNemar of b against a on the same questions: questions b gets right and a wrong (gained), and back."""
    gained, lost, p = mcnemar_exact(a.correct_flags, b.correct_flags)
    return {"accuracy_a": a.accuracy, "accuracy_b": b.accuracy, "gained": gained, "lost": lost, "p_value": p}


def summary_row(result: EvalResult) -> dict[str, Any]:
    low, high = result.accuracy_interval
    return {"accuracy": result.accuracy, "wilson95": [low, high], "correct": result.correct, "total": result.total,
            "env_reward": result.env_reward_mean, "truncation_rate": result.truncation_rate,
            "mean_tokens": result.mean_tokens}  # fmt: skip


def compare_seed(curves: Mapping[str, Mapping[int, EvalResult]], budgets: Mapping[str, Mapping[int, Mapping]]) -> dict:
    """Every pair of arms at the last step (equal optimiser steps), and each other arm at the evaluated checkpoint
    whose student tokens come nearest the tree's final count (equal student tokens)."""
    arms = list(curves)
    final = {arm: curves[arm][max(curves[arm])] for arm in arms}
    out: dict[str, Any] = {"equal_steps": {}, "equal_student_tokens": {}}
    for i, a in enumerate(arms):
        for b in arms[i + 1 :]:
            out["equal_steps"][f"{b} vs {a}"] = paired(final[a], final[b])
    if "mcts" in arms:
        tree_tokens = budgets["mcts"][max(budgets["mcts"])]["student_tokens"]
        for arm in arms:
            if arm == "mcts" or not any(b["student_tokens"] for b in budgets[arm].values()):
                continue
            step = min(budgets[arm], key=lambda s: abs(budgets[arm][s]["student_tokens"] - tree_tokens))
            out["equal_student_tokens"][f"mcts vs {arm}"] = {
                "tree_student_tokens": tree_tokens, f"{arm}_step": step,
                f"{arm}_student_tokens": budgets[arm][step]["student_tokens"],
                **paired(curves[arm][step], final["mcts"]),
            }  # fmt: skip
    return out


def plot(args: argparse.Namespace, curves: Mapping[int, Mapping[str, Mapping[int, EvalResult]]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    colours = {"mcts": "tab:blue", "sample": "tab:orange", "sft": "tab:green"}
    styles = ["-", "--", ":", "-."]
    fig, ax = plt.subplots(figsize=(7.5, 4.8))
    for k, (seed, arms) in enumerate(curves.items()):
        for j, (arm, results) in enumerate(arms.items()):
            steps = sorted(results)
            acc = [results[s].accuracy for s in steps]
            low = [a - results[s].accuracy_interval[0] for s, a in zip(steps, acc, strict=True)]
            high = [results[s].accuracy_interval[1] - a for s, a in zip(steps, acc, strict=True)]
            shift = (j - 1) * 0.15 * args.eval_every / 2 + k * 0.05 * args.eval_every  # keep the bars apart
            ax.errorbar(
                [s + shift for s in steps], acc, yerr=[low, high], color=colours[arm],
                linestyle=styles[k % len(styles)], marker="o", capsize=3, label=f"{arm}, seed {seed}",
            )  # fmt: skip
    ax.set_xlabel("training examples (one optimiser step each)")
    ax.set_ylabel(f"{args.dataset} {args.split} accuracy (greedy, Wilson 95%)")
    ax.set_ylim(bottom=0)
    ax.legend(fontsize=8)
    ax.set_title(f"SmolLM2-135M on a CPU: tree vs plain GRPO vs SFT ({args.dataset}, {args.split})")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for noisy in ("httpx", "httpcore"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    args = parse_args(argv)
    if min(args.num_examples, args.eval_every) <= 0 or args.num_examples % args.eval_every:
        raise SystemExit("--num-examples must be a positive multiple of --eval-every")
    config = experiment_config(args)
    rows = held_out_rows(args, config)
    started = time.perf_counter()
    evaluations = Evaluations(args, config, rows)
    base, _ = evaluations.of(args.out, f"{args.split}-{BASE}", None)
    curves: dict[int, dict[str, dict[int, EvalResult]]] = {}
    runs: dict[str, Any] = {}
    for seed in args.seeds:
        curves[seed], budgets = {}, {}
        for arm in args.arms:
            train(args, config, seed, arm)
            directory = arm_dir(args, seed, arm)
            curves[seed][arm], budgets[arm] = {0: base}, {0: budget(directory, 0)}
            for step, checkpoint in list_checkpoints(directory):
                result, digest = evaluations.of(directory, f"{args.split}-step-{step}", checkpoint / "adapter")
                curves[seed][arm][step], budgets[arm][step] = result, budget(directory, step)
                runs.setdefault(str(seed), {}).setdefault(arm, {})[str(step)] = {
                    "adapter": str(checkpoint / "adapter"), "sha256": digest, **summary_row(result),
                    "budget": budgets[arm][step], "correct_flags": list(result.correct_flags),
                }  # fmt: skip
        runs[str(seed)]["tests"] = compare_seed(curves[seed], budgets)
        runs[str(seed)]["tests"]["vs_base"] = {
            arm: paired(base, curves[seed][arm][max(curves[seed][arm])]) for arm in args.arms
        }
    report_file, plot_file = (args.out / name.format(split=args.split) for name in (REPORT_FILE, PLOT_FILE))
    plot(args, curves, plot_file)
    report = {
        "settings": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "config": {
            name: dataclasses.asdict(getattr(config.training, name))
            for name in ("mcts", "rewards", "sample", "grpo", "legacy", "optimizer", "evaluation")
        },
        "questions": [r["info"]["id"] for r in rows],
        "base": {**summary_row(base), "correct_flags": list(base.correct_flags)},
        "runs": runs,
        "eval_seconds": evaluations.seconds,
        "wall_seconds": time.perf_counter() - started,
    }
    report_file.write_text(json.dumps(report, indent=1), encoding="utf-8")
    print_table(args, report)
    print(f"wrote {report_file} and {plot_file}")
    return 0


def print_table(args: argparse.Namespace, report: Mapping[str, Any]) -> None:
    base = report["base"]
    print(f"\n{args.dataset} {args.split}, {base['total']} questions, untrained: {_acc(base)}")
    print(f"{'seed':>5} {'arm':>7} {'accuracy (Wilson 95%)':>24} {'p vs sample':>11} {'env reward':>10} "
          f"{'trunc':>6} {'student tok':>11} {'teacher tok':>11} {'grad tok':>9} {'train s':>8}")  # fmt: skip
    for seed, arms in report["runs"].items():
        tests = arms["tests"]["equal_steps"]
        for arm, steps in arms.items():
            if arm == "tests":
                continue
            row = steps[str(max(map(int, steps)))]
            test = tests.get(f"sample vs {arm}") or tests.get(f"{arm} vs sample")
            p = "-" if test is None else f"{test['p_value']:.3g}"
            b = row["budget"]
            print(
                f"{seed:>5} {arm:>7} {_acc(row):>24} {p:>11} {row['env_reward']:>10.3f} {row['truncation_rate']:>6.1%} "
                f"{b['student_tokens']:>11.0f} {b['teacher_tokens']:>11.0f} {b['grad_tokens']:>9.0f} "
                f"{b['time_s']:>8.0f}"
            )


def _acc(row: Mapping[str, Any]) -> str:
    low, high = row["wilson95"]
    return f"{row['accuracy']:.1%} [{low:.1%}, {high:.1%}]"


if __name__ == "__main__":
    raise SystemExit(main())
