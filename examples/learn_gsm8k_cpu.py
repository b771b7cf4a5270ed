"""Does MCTS + GRPO teach SmolLM2-135M anything? A CPU experiment with a held-out before/after test.

    GSM8K_PATH=../shared/data/gsm8k python examples/learn_gsm8k_cpu.py            # ~50 min on 2 idle cores
    python examples/learn_gsm8k_cpu.py --num-examples 4 --eval-size 8 --eval-every 2  # a smoke run

What it runs: `train_vllm.py`'s own `training.run.run` (the same assembly, search, Trainer, checkpoints,
metrics and plots), its settings settled by `training.settings.settle` from train_vllm.py's flags, on the
embedded student, SmolLM2-135M-Instruct (LoRA r=32, CPU; models.yaml's cpu_dtype), with

- teachers: `--reference-teacher only`, i.e. GSM8K's reference solution as the teacher (its next
  line is a "right" step, the line with a number changed a "wrong" one), beside the student's own
  sampled steps (continuations of its own answer). Offline and free; an API teacher ensemble plays
  this part on a GPU machine;
- the GRPO loss with the `dr_grpo` normalisation, one search per training question (GSM8K
  *train* split, seeded shuffle); with `--loss-type grpo` the student learns to answer "#### N"
  at once (the README's run v5);
- a search budget and learning rate sized for a CPU, and leaf values in which the answer counts
  most: HRE weight 1, PRE 0.1, no length penalty, and a format bonus of 0.2 for a worked-out
  `#### N` answer, never for a bare guess (runs v2 and v4 paid guesses, and the student learnt to
  guess). The flags are below; `--help` prints the defaults.

What it measures: greedy answers (`--max-new-tokens`) of the student on the first `--eval-size`
GSM8K *test* questions, none of which is trained on, before training, at every `--eval-every`
examples, and after: the rate of well-formed `#### N` answers (the format the system prompt asks
for), the rate of those the answer's own work arrives at (`answers.worked_answer`: a bare "#### N"
guess is well-formed but not worked out) and the accuracy (HRE), each with a Wilson 95% interval
and the exact McNemar test of after vs before on the same questions (paired), and the mean
number of lines per answer. It writes, under `--out`:

- `learning.json`: the settings, every evaluation (with per-question flags) and the tests;
- `learning_curve.png`: held-out format, worked-out and accuracy rates against training examples, and the
  training reward (mean of each search's group) on a second axis;
- the run's own checkpoints, `metrics.jsonl` and `plots/`.

The held-out figures are the finding, whatever they are: a flat result is printed as flat.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from alphazero_llm.config import Config, load_config, override
from alphazero_llm.data import Gsm8kSource, load_gsm8k
from alphazero_llm.models.student import StudentModel, StudentSpec
from alphazero_llm.training.checkpoint import list_checkpoints, sha256_file
from alphazero_llm.training.cli import build_parser
from alphazero_llm.training.evaluation import EvalResult, evaluate_greedy, mcnemar_exact
from alphazero_llm.training.run import EVAL_FILE, run
from alphazero_llm.training.settings import settle

logger = logging.getLogger("learn_gsm8k_cpu")

LEARNING_FILE = "learning.json"


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    p.add_argument("--out", type=Path, default=Path("runs/learn_gsm8k_cpu"), help="output directory")
    p.add_argument("--num-examples", type=int, default=30, help="training questions (one search + update each)")
    p.add_argument("--eval-size", type=int, default=100, help="held-out GSM8K test questions")
    p.add_argument("--eval-every", type=int, default=15, help="examples between held-out evaluations")
    p.add_argument("--iterations", type=int, default=20, help="MCTS simulations per question")
    p.add_argument("--selection", choices=["ucb1", "puct"], default="ucb1")
    p.add_argument("--exploration", type=float, default=0.5, help="UCB1/PUCT c (training.yaml: sqrt 2)")
    p.add_argument("--student-steps", type=int, default=1, help="student proposals per expansion")
    p.add_argument("--tokens-per-step", type=int, default=32, help="a student step is one line or at most this")
    p.add_argument("--max-depth", type=int, default=10)
    p.add_argument("--hre-weight", type=float, default=1.0, help="leaf value's HRE weight (training.yaml: 0.4)")
    p.add_argument("--pre-weight", type=float, default=0.1, help="leaf value's PRE weight (training.yaml: 0.6)")
    p.add_argument("--length-penalty", type=float, default=0.0, help="leaf value's cost per step (training.yaml: 0.01)")
    p.add_argument(
        "--format-bonus",
        type=float,
        default=0.2,
        help="leaf value's bonus for a worked-out `#### N` answer (training.yaml: 0)",
    )
    p.add_argument(
        "--loss-type", choices=["grpo", "bnpo", "dr_grpo"], default="dr_grpo",
        help="GRPO loss normalisation (training.yaml: dr_grpo); grpo favours short trajectories",
    )  # fmt: skip
    p.add_argument("--learning-rate", type=float, default=5e-4, help="LoRA learning rate (training.yaml: 1e-5)")
    p.add_argument("--warmup-steps", type=int, default=2)
    p.add_argument(
        "--max-new-tokens", type=int, default=512, help="greedy answer budget in the evaluations (protocol: 512)"
    )
    p.add_argument(
        "--resume", action="store_true",
        help="continue the run in --out from its latest checkpoint up to --num-examples (same settings)",
    )  # fmt: skip
    p.add_argument(
        "--analyse-only", action="store_true", help="skip training; evaluate and report the run already in --out"
    )
    p.add_argument(
        "--rollout-tokens", type=int, default=None, help="new tokens of a leaf's rollout (default: training.yaml's)"
    )
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--dataset-path", default=None, help="local GSM8K directory (default: $GSM8K_PATH, else the hub)")
    return p.parse_args(argv)


def experiment_config(args: argparse.Namespace) -> Config:
    """The CPU config (training.yaml with its `cpu` section, `Config.for_device`) with this experiment's search
    budget, leaf-value weights, learning rate and answer length; the same on every device, so that
    `settings.settle` keeps it."""
    changes = {
        "mcts.num_iterations": args.iterations,
        "mcts.selection": args.selection,
        "mcts.exploration_constant": args.exploration,
        "mcts.num_right": 1,  # the reference teacher proposes one step per direction
        "mcts.num_wrong": 1,
        "mcts.num_student": args.student_steps,
        "mcts.tokens_per_expansion": args.tokens_per_step,
        "mcts.max_depth": args.max_depth,
        "mcts.rollout_tokens": args.rollout_tokens,
        "rewards.hre_weight": args.hre_weight,
        "rewards.pre_weight": args.pre_weight,
        "rewards.length_penalty": args.length_penalty,
        "rewards.format_bonus": args.format_bonus,
        "optimizer.learning_rate": args.learning_rate,
        "optimizer.warmup_steps": args.warmup_steps,
        "grpo.loss_type": args.loss_type,
    }
    base = load_config()
    training = override(base.training_on_cpu, changes)
    config = dataclasses.replace(base, training=training, training_on_cpu=training)
    # The run's greedy evaluations before and after answer in as many tokens as the curve's.
    training = override(config.training, {"evaluation.max_new_tokens": args.max_new_tokens})
    return dataclasses.replace(config, training=training, training_on_cpu=training)


def train(args: argparse.Namespace, config: Config) -> None:
    """`train_vllm.py --reference-teacher only --use-grpo ...` on this experiment's config; keeps every checkpoint."""
    argv = [
        "--reference-teacher", "only", "--use-grpo", "--device", "cpu",
        "--num-examples", str(args.num_examples), "--save-every", str(args.eval_every),
        "--eval-size", str(args.eval_size), "--eval-split", "test",  # the curve's questions: the first test ones
        "--checkpoint-dir", str(args.out), "--seed", str(args.seed),
        "--keep-last", "0",  # the curve needs every checkpoint's adapter; the default keeps the last three
    ]  # fmt: skip
    if args.dataset_path:
        argv += ["--dataset-path", args.dataset_path]
    if args.resume:
        argv.append("--resume")
    settings = settle(build_parser(config).parse_args(argv), config, "cpu")
    logger.info("train_vllm.py %s (search and optimiser overridden: %s)", " ".join(argv), settings.training.mcts)
    run(settings)


def adapter_digest(checkpoint: Path) -> str:
    """SHA-256 of a checkpoint's adapter weights: which policy an evaluation scored."""
    return sha256_file(checkpoint / "adapter" / "adapter_model.safetensors")


def earlier_evaluations(args: argparse.Namespace, digests: Mapping[int, str]) -> dict[int, EvalResult]:
    """The evaluations of an earlier report in --out (a run now resumed) of these very checkpoints.

    Reused only for the same questions and answer length, and only where the checkpoint's adapter digest
    (`digests`, by step) is the one evaluated then (a fresh run in the same --out overwrites the checkpoints).
    """
    path = args.out / LEARNING_FILE
    if not path.is_file():
        return {}
    summary = json.loads(path.read_text(encoding="utf-8"))
    same = {k: summary["settings"].get(k) for k in ("eval_size", "max_new_tokens", "dataset_path")}
    if same != {"eval_size": args.eval_size, "max_new_tokens": args.max_new_tokens, "dataset_path": args.dataset_path}:
        logger.info("%s evaluated other questions or answer lengths (%s); evaluating again", path, same)
        return {}
    evaluated = summary.get("adapter_sha256", {})
    return {
        int(step): EvalResult.from_record(record)
        for step, record in summary["evaluations"].items()
        if evaluated.get(step) is not None and evaluated[step] == digests.get(int(step))
    }


def curve(
    args: argparse.Namespace,
    config: Config,
    rows: Sequence[Mapping[str, Any]],
    checkpoints: Mapping[int, Path],
    digests: Mapping[int, str],
) -> dict[int, EvalResult]:
    """Held-out evaluation of every intermediate checkpoint (the run itself evaluated before and after).

    A checkpoint that an earlier report in --out evaluated already (before a --resume) is not evaluated again.
    """
    evals = json.loads((args.out / EVAL_FILE).read_text(encoding="utf-8"))
    results = {step: r for step, r in earlier_evaluations(args, digests).items() if 0 < step < args.num_examples}
    results |= {0: EvalResult.from_record(evals["before"]), args.num_examples: EvalResult.from_record(evals["after"])}
    todo = [(step, path) for step, path in checkpoints.items() if step not in results]
    if todo:
        student = StudentModel.load(StudentSpec(name="embedded", device="cpu"), config.models)
        for step, path in todo:
            student.load_adapter(path / "adapter")
            result = evaluate_greedy(
                student, rows, config.training.environment.system_prompt, args.max_new_tokens,
                desc=f"held-out eval at example {step}",
            )  # fmt: skip
            logger.info("held-out after %d examples: %s", step, result)
            results[step] = result
    return dict(sorted(results.items()))


def report(args: argparse.Namespace, results: Mapping[int, EvalResult]) -> dict[str, Any]:
    before, after = results[0], results[max(results)]
    tests = {}
    measures = [("format", lambda r: r.format_flags), ("accuracy", lambda r: r.correct_flags)]
    if before.worked_flags and after.worked_flags:
        measures.append(("worked", lambda r: r.worked_flags))
    for name, flags in measures:
        gained, lost, p = mcnemar_exact(flags(before), flags(after))
        tests[name] = {"gained": gained, "lost": lost, "p_value": p}
    print(f"\nheld-out: first {before.total} GSM8K test questions, greedy, {args.max_new_tokens} new tokens")
    print(f"{'examples':>8}  {'#### format':>24}  {'worked out':>24}  {'accuracy':>24}  {'lines/answer':>12}")
    for step, r in results.items():
        rates = [_rate(r.format_rate, r.format_interval), _rate(r.worked_rate, r.worked_interval),
                 _rate(r.accuracy, r.accuracy_interval)]  # fmt: skip
        print(f"{step:>8}  " + "  ".join(f"{rate:>24}" for rate in rates) + f"  {r.mean_answer_lines:>12.1f}")
    for name, t in tests.items():
        print(f"McNemar exact, {name}: {t['gained']} questions gained, {t['lost']} lost, p = {t['p_value']:.2g}")
    return tests


def _rate(rate: float, interval: tuple[float, float]) -> str:
    return f"{rate:>6.1%} [{interval[0]:>5.1%}, {interval[1]:>5.1%}]" if math.isfinite(rate) else "-"


def plot(args: argparse.Namespace, results: Mapping[int, EvalResult]) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    records = [json.loads(line) for line in (args.out / "metrics.jsonl").read_text(encoding="utf-8").splitlines()]
    fig, ax = plt.subplots(figsize=(7, 4.5))
    steps = list(results)
    measures = [
        ("held-out #### format", lambda r: r.format_rate, lambda r: r.format_interval),
        ("held-out accuracy", lambda r: r.accuracy, lambda r: r.accuracy_interval),
    ]
    if all(r.worked_flags for r in results.values()):
        measures.insert(1, ("held-out worked-out #### N", lambda r: r.worked_rate, lambda r: r.worked_interval))
    for label, rate, interval in measures:
        values = [rate(results[s]) for s in steps]
        errors = [[v - interval(results[s])[0] for s, v in zip(steps, values, strict=True)],
                  [interval(results[s])[1] - v for s, v in zip(steps, values, strict=True)]]  # fmt: skip
        ax.errorbar(steps, values, yerr=errors, marker="o", capsize=3, label=label)
    ax.set_xlabel("training examples (one MCTS + GRPO update each)")
    ax.set_ylabel("rate on held-out test questions (Wilson 95%)")
    ax.set_ylim(0, 1)
    reward = [(r["step"], r["reward_mean"]) for r in records if _finite(r.get("reward_mean"))]
    if reward:
        twin = ax.twinx()
        twin.plot(*zip(*reward, strict=True), color="grey", alpha=0.5, label="training reward (group mean)")
        twin.set_ylabel("training reward")
        twin.legend(loc="lower right")
    ax.legend(loc="upper left")
    ax.set_title("SmolLM2-135M, MCTS (reference teacher + student) + GRPO, CPU")
    path = args.out / "learning_curve.png"
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _finite(value: Any) -> bool:
    return isinstance(value, int | float) and math.isfinite(value)


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for noisy in ("httpx", "httpcore"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    args = parse_args(argv)
    if min(args.num_examples, args.eval_size, args.eval_every, args.iterations) <= 0:
        raise SystemExit("--num-examples, --eval-size, --eval-every and --iterations must be positive")
    config = experiment_config(args)
    ds = config.training.dataset
    source = Gsm8kSource.resolve(args.dataset_path, ds.name, ds.config)
    rows = list(load_gsm8k(ds.eval_split, source, args.eval_size))
    if not args.analyse_only:
        train(args, config)
    checkpoints = dict(list_checkpoints(args.out))
    digests = {step: adapter_digest(path) for step, path in checkpoints.items()}
    results = curve(args, config, rows, checkpoints, digests)
    tests = report(args, results)
    path = plot(args, results)
    summary = {
        "settings": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "search": dataclasses.asdict(config.training.mcts),
        "rewards": dataclasses.asdict(config.training.rewards),
        "grpo": dataclasses.asdict(config.training.grpo),
        "evaluations": {str(step): r.to_record() for step, r in results.items()},
        "adapter_sha256": {str(step): digest for step, digest in digests.items()},
        "mcnemar": tests,
    }
    (args.out / LEARNING_FILE).write_text(json.dumps(summary, indent=2), encoding="utf-8")
    print(f"wrote {path} and {args.out / LEARNING_FILE}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
