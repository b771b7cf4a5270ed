"""PRE throughput: the project's batched scorer against the original per-sample loop, same model, same run.

    python bench/bench_pre.py [--questions 16] [--group 8] [--repeats 3] [--dtype bfloat16] [--dataset-path DIR]

GSM8K is found as the library finds it (training/run.py): `--dataset-path`, else training.yaml's
`dataset.path`, else $GSM8K_PATH, else the hub (`GSM8K_PATH=../shared/data/gsm8k` beside the shared data).

Workload: for each of the first `--questions` GSM8K test questions, a group of `--group`
completions (its gold solution and copies with the reasoning lines shuffled), plus the
reference solution: what the rubric scores for one question's rollouts.

- baseline (the original design): one `model(**inputs, labels=...)` per sample, the prompt
  masked with -100, perplexity = exp(loss). The model computes logits for every position.
- ours: `PerplexityReward.score`, one call per group: length-sorted, right-padded batches,
  the LM head applied only where a completion token is predicted.

Each variant runs in its own subprocess, so that its peak memory (ru_maxrss) is its own; when one
fails, its command and the tail of its stderr are printed and the bench exits non-zero.
Prints completion tokens per second (median over repeats), the ratio, peak RSS, and the
largest difference between the two PRE values (they must agree).
"""

from __future__ import annotations

import argparse
import json
import random
import resource
import shlex
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence

import torch

from alphazero_llm.config import load_config, override
from alphazero_llm.data import Gsm8kSource, load_gsm8k
from alphazero_llm.models.student import StudentModel, StudentSpec
from alphazero_llm.rewards import PerplexityReward, pre_reward

STDERR_TAIL_LINES = 40


def gsm8k_source(dataset_path: str | None) -> Gsm8kSource:
    """Where GSM8K comes from, as the library decides it: the flag, else training.yaml's dataset.path,
    else $GSM8K_PATH, else the hub."""
    ds = override(load_config().training.dataset, {"path": dataset_path})
    return Gsm8kSource.resolve(ds.path, ds.name, ds.config)


def describe(source: Gsm8kSource) -> str:
    return source.path if source.path is not None else f"the hub ({source.name}/{source.config})"


def tail(text: str, lines: int = STDERR_TAIL_LINES) -> str:
    """The last `lines` lines of `text`."""
    return "\n".join(text.rstrip().splitlines()[-lines:])


def run_child(cmd: Sequence[str], name: str) -> str:
    """The stdout of `cmd`; when it fails, its command and stderr tail go to stderr and the bench exits non-zero."""
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        print(f"$ {shlex.join(cmd)}\n{tail(done.stderr)}", file=sys.stderr)
        sys.exit(f"bench_pre: the {name!r} variant failed (exit {done.returncode}); its command and stderr are above")
    return done.stdout


def workload(questions: int, group: int, source: Gsm8kSource) -> list[dict]:
    rng = random.Random(0)
    groups = []
    for row in load_gsm8k("test", source, num_examples=questions):
        solution = row["info"]["solution"]
        *steps, final = solution.split("\n")
        completions = [solution]
        for _ in range(group - 1):
            rng.shuffle(steps)
            completions.append("\n".join([*steps, final]))
        groups.append({"prompt": [{"role": "user", "content": row["question"]}], "completions": completions,
                       "solution": solution})  # fmt: skip
    return groups


def naive_ppl(student: StudentModel, prompt: list[dict], text: str) -> float:
    """The original design: a full forward with labels, prompt tokens masked."""
    prompt_ids = student.prompt_ids(prompt)
    ids = prompt_ids + student.tokenizer(text, add_special_tokens=False)["input_ids"]
    input_ids = torch.tensor([ids], device=student.device)
    labels = input_ids.clone()
    labels[0, : len(prompt_ids)] = -100
    return float(torch.exp(student.model(input_ids=input_ids, labels=labels).loss))


def run_naive(student: StudentModel, groups: list[dict]) -> list[list[float]]:
    out = []
    with torch.no_grad():
        for g in groups:
            reference = naive_ppl(student, g["prompt"], g["solution"])
            out.append([pre_reward(naive_ppl(student, g["prompt"], c), reference) for c in g["completions"]])
    return out


def run_ours(student: StudentModel, groups: list[dict]) -> list[list[float]]:
    pre = PerplexityReward(student)  # a fresh cache: the reference is scored too, as in the baseline
    return [pre.score([g["prompt"]] * len(g["completions"]), g["completions"], [g["solution"]] * len(g["completions"]))
            for g in groups]  # fmt: skip


def variant(name: str, args: argparse.Namespace) -> dict:
    groups = workload(args.questions, args.group, gsm8k_source(args.dataset_path))
    student = StudentModel.load(StudentSpec(name="embedded", device="cpu", dtype=args.dtype, lora=False),
                                load_config().models)  # fmt: skip
    tokens = sum(len(student.tokenizer(t, add_special_tokens=False)["input_ids"])
                 for g in groups for t in [g["solution"], *g["completions"]])  # fmt: skip
    run = {"naive": run_naive, "ours": run_ours}[name]
    run(student, groups[:1])  # warm-up
    seconds, values = [], []
    for _ in range(args.repeats):
        start = time.perf_counter()
        values = run(student, groups)
        seconds.append(time.perf_counter() - start)
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"tokens": tokens, "seconds": statistics.median(seconds), "peak_mib": peak_mib, "values": values}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--questions", type=int, default=16)
    parser.add_argument("--group", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--dtype", choices=["bfloat16", "float32"], default="bfloat16")
    parser.add_argument(
        "--dataset-path",
        default=None,
        help="local GSM8K: a directory holding test.jsonl, or a pattern with {split} "
        "(default: training.yaml's dataset.path, else $GSM8K_PATH, else the hub)",
    )
    parser.add_argument("--variant", choices=["naive", "ours"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.variant:
        print(json.dumps(variant(args.variant, args)))
        return

    results = {}
    for name in ("naive", "ours"):
        cmd = [sys.executable, __file__, "--variant", name, *sys.argv[1:]]
        results[name] = json.loads(run_child(cmd, name).strip().splitlines()[-1])
    naive, ours = results["naive"], results["ours"]
    diff = max(abs(a - b) for ga, gb in zip(naive["values"], ours["values"], strict=True)
               for a, b in zip(ga, gb, strict=True))  # fmt: skip
    print(f"PRE on {args.questions} GSM8K test questions from {describe(gsm8k_source(args.dataset_path))} x "
          f"({args.group} completions + reference), {args.dtype}, {naive['tokens']} completion tokens, "
          f"median of {args.repeats}")  # fmt: skip
    for name, r in results.items():
        print(f"  {name:6s} {r['tokens'] / r['seconds']:8.0f} tokens/s  ({r['seconds']:.2f} s)"
              f"  peak RSS {r['peak_mib']:.0f} MiB")  # fmt: skip
    print(f"  speed-up ours / naive: {naive['seconds'] / ours['seconds']:.2f}x")
    print(f"  largest PRE difference between the two: {diff:.2e}")


if __name__ == "__main__":
    main()
