"""Evaluate a student (the embedded SmolLM2 by default, optionally with a LoRA adapter) under the evaluation protocol.

    GSM8K_PATH=../shared/data/gsm8k python examples/evaluate_student.py --split test --size 100 \
        --out runs/baseline_untrained_test100

Greedy answers of up to 512 new tokens (training.yaml's `evaluation.max_new_tokens`), stopped at the end
of the first `#### N` line, to the first `--size` questions of `--split` (`data.load_splits`: train / dev
/ test, disjoint). Writes `<out>/report.json` (accuracy with its Wilson interval, the environment's
reward, worked-out, format and truncation rates, tokens per answer, the per-question outcomes, the
adapter's SHA-256) and `<out>/answers_eval.jsonl` (every answer text with its outcomes, to re-score).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
from collections.abc import Sequence
from pathlib import Path

from alphazero_llm.config import load_config, override
from alphazero_llm.data import Gsm8kSource, load_splits
from alphazero_llm.models.student import StudentModel, StudentSpec
from alphazero_llm.training.checkpoint import sha256_file
from alphazero_llm.training.run import evaluate

logger = logging.getLogger("evaluate_student")


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--split", choices=["dev", "test"], default="dev")
    p.add_argument("--size", type=int, default=100, help="the first N questions of the split (-1: all)")
    p.add_argument("--student", default="embedded")
    p.add_argument("--adapter", type=Path, default=None, help="a saved LoRA adapter directory (default: none)")
    p.add_argument("--max-new-tokens", type=int, default=None, help="default: training.yaml's evaluation budget")
    p.add_argument("--dataset-path", default=None, help="default: training.yaml's dataset.path, else $GSM8K_PATH")
    p.add_argument("--out", type=Path, required=True)
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    args = parse_args(argv)
    config = load_config()
    changes = {"evaluation.split": args.split, "evaluation.max_new_tokens": args.max_new_tokens}
    training = override(config.training, {**changes, "dataset.path": args.dataset_path})
    config = dataclasses.replace(config, training=training)
    ds = training.dataset
    rows = load_splits(Gsm8kSource.resolve(ds.path, ds.name, ds.config), ds, training.seed).named(args.split)
    rows = rows if args.size == -1 else rows[: args.size]
    student = StudentModel.load(StudentSpec(name=args.student, device="cpu"), config.models)
    digest = None
    if args.adapter is not None:
        student.load_adapter(args.adapter)
        digest = sha256_file(args.adapter / "adapter_model.safetensors")
    args.out.mkdir(parents=True, exist_ok=True)
    result = evaluate(student, rows, config, args.out, "eval")  # writes <out>/answers_eval.jsonl
    report = {
        "split": args.split,
        "questions": [row["info"]["id"] for row in rows],
        "max_new_tokens": training.evaluation.max_new_tokens,
        "student": args.student,
        "adapter": None if args.adapter is None else {"path": str(args.adapter), "sha256": digest},
        "summary": str(result),
        **result.to_record(),
    }
    (args.out / "report.json").write_text(json.dumps(report, indent=2), encoding="utf-8")
    logger.info("%s: %s", args.out, result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
