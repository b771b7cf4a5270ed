"""GPU check: the student through transformers (nf4 4-bit + LoRA) and through vLLM (bf16 + the same LoRA).

    bash bench/gpu_check.sh [--model ID_OR_DIR] [--quick]      # installs vLLM if needed, 480 s cap
    python bench/gpu_check.py --help

One process, one GPU, in this order:

1. Load the student with `StudentModel.load(StudentSpec(name=--model, device="cuda"))` and give
   its LoRA B matrices small random values (`--lora-noise`), so that the adapter changes the
   model measurably (a fresh LoRA is the identity and could not show whether vLLM applies it).
2. transformers: time `generate` (8 GSM8K-style prompts x n=4, 128 new tokens, T=0.7) and
   `completion_logprobs` (32 prompt/completion pairs taken from that generation).
3. `save_adapter`, start `VLLMEngine` beside the student, `set_adapter`, and time the same two
   calls through vLLM (log-probs via `SamplingParams(prompt_logprobs=1, max_tokens=1)` on
   prompt + completion, the completion part kept).
4. Agreement: vLLM's log-probs with the adapter against transformers' (they differ by nf4 vs
   bf16 base weights only), the adapter's effect in both, and then a second adapter saved into
   the *same* directory: after `set_adapter` vLLM must follow the new weights (a new adapter id).
   A failed check makes the exit status 1.

Timings are medians of `--repeats` runs after one warm-up; tokens/s counts generated tokens
(re-tokenized completions, the same count for both paths) for generate and scored sequence
tokens (prompt + completion) for log-probs. Peak memory: this process's torch allocator peak
(the transformers student) and the device-wide use seen after each phase (vLLM's engine runs in
a child process, which the allocator of this one does not see).

Exit status: 0 ok, 1 a check failed, 2 no CUDA, 3 vLLM missing, 4 the model could not be loaded.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import importlib.util
import logging
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TypeVar

import torch

from alphazero_llm.config import ModelsConfig, load_config
from alphazero_llm.models.prompts import question_messages
from alphazero_llm.models.sampling import Sampling
from alphazero_llm.models.student import Prompt, StudentModel, StudentSpec

DEFAULT_MODEL = "meta-llama/Llama-3.2-3B-Instruct"

# GSM8K-style word problems written for this check (not taken from the data set).
QUESTIONS = (
    "A bakery sells muffins for $3 each. On Monday it sold 48 muffins and on Tuesday twice as many. "
    "How much money did it make on the two days?",
    "Tom reads 12 pages a day. His book has 300 pages and he has already read 84. "
    "How many more days does he need to finish it?",
    "A garden has 6 rows of tomato plants with 14 plants in each row. A storm destroys 17 plants. "
    "How many plants are left?",
    "Maria saves $25 a week. She wants a bike that costs $340 and already has $90. How many weeks must she save?",
    "A bus carries 52 passengers. At the first stop 13 get off and 8 get on; at the second stop half of "
    "the passengers get off. How many passengers remain?",
    "A rectangle is 3 times as long as it is wide, and its perimeter is 96 cm. What is its area in square cm?",
    "Sam buys 3 packs of pencils with 12 pencils each and gives 5 pencils to each of his 4 friends. "
    "How many pencils does he keep?",
    "A tank holds 1,200 litres. It is filled at 40 litres per minute and leaks 15 litres per minute. "
    "How many minutes does it take to fill the empty tank?",
)

T = TypeVar("T")


@dataclass
class Timing:
    path: str
    op: str
    seconds: list[float] = field(default_factory=list)
    tokens: int = 0

    @property
    def median(self) -> float:
        return statistics.median(self.seconds)

    @property
    def tokens_per_s(self) -> float:
        return self.tokens / self.median if self.median > 0 else float("nan")

    def row(self) -> str:
        spread = f"{min(self.seconds):.2f}-{max(self.seconds):.2f}"
        numbers = f"{self.median:>9.3f} {spread:>13} {self.tokens:>8d} {self.tokens_per_s:>10.1f}"
        return f"{self.path:<13} {self.op:<9} {numbers}"


HEADER = f"{'path':<13} {'op':<9} {'median s':>9} {'min-max s':>13} {'tokens':>8} {'tokens/s':>10}"


@dataclass
class Memory:
    """Device memory in use (all processes) after each phase, and this process's allocator peak."""

    phases: list[tuple[str, float]] = field(default_factory=list)

    def note(self, phase: str) -> None:
        free, total = torch.cuda.mem_get_info()
        used = (total - free) / 2**30
        self.phases.append((phase, used))
        print(f"[memory] after {phase}: {used:.1f} GiB in use on the device", flush=True)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Time the student's generate and completion_logprobs through transformers "
        "(4-bit + LoRA) and vLLM (bf16 + LoRA) on one CUDA GPU, and check that vLLM applies the adapter.",
    )
    parser.add_argument(
        "--model",
        default=DEFAULT_MODEL,
        help="hub id or local checkpoint directory (the GPU box may be offline: pass a directory)",
    )
    parser.add_argument("--quick", action="store_true", help="4 prompts x n=2, 64 tokens, 1 repeat, vLLM eager")
    parser.add_argument("--repeats", type=int, default=None, help="timed runs per measurement (default 3, quick 1)")
    parser.add_argument("--prompts", type=int, default=None, help="prompts per generate call (default 8, quick 4)")
    parser.add_argument("--n", type=int, default=None, help="completions per prompt (default 4, quick 2)")
    parser.add_argument("--max-new-tokens", type=int, default=None, help="default 128, quick 64")
    parser.add_argument("--pairs", type=int, default=None, help="log-prob pairs (default 32, quick 8)")
    parser.add_argument(
        "--gpu-memory-utilization", type=float, default=0.35, help="vLLM's share of the GPU (default 0.35)"
    )
    parser.add_argument("--enforce-eager", action="store_true", help="vLLM without CUDA graphs (faster start)")
    parser.add_argument("--lora-noise", type=float, default=0.03, help="std of the random LoRA B values")
    parser.add_argument("--skip-vllm", action="store_true", help="time transformers only")
    args = parser.parse_args(argv)
    quick = args.quick
    defaults = {"repeats": (3, 1), "prompts": (8, 4), "n": (4, 2), "max_new_tokens": (128, 64), "pairs": (32, 8)}
    for name, (full, short) in defaults.items():
        if getattr(args, name) is None:
            setattr(args, name, short if quick else full)
    args.enforce_eager = args.enforce_eager or quick
    if not 1 <= args.prompts <= len(QUESTIONS):
        parser.error(f"--prompts must be in 1..{len(QUESTIONS)}")
    if min(args.repeats, args.n, args.max_new_tokens, args.pairs) < 1:
        parser.error("--repeats, --n, --max-new-tokens and --pairs must be >= 1")
    return args


def timed(fn: Callable[[], T], repeats: int) -> tuple[list[float], T]:
    """Wall-clock seconds of `repeats` calls (CUDA synchronised around each), and the last result."""
    seconds, result = [], None
    for _ in range(repeats):
        torch.cuda.synchronize()
        start = time.perf_counter()
        result = fn()
        torch.cuda.synchronize()
        seconds.append(time.perf_counter() - start)
    return seconds, result  # type: ignore[return-value]


def perturb_lora(student: StudentModel, std: float, seed: int) -> None:
    """Random LoRA B (A keeps its init), so the adapter changes the model: std 0.03 moved SmolLM2-135M's
    log-probs by ~0.15 nats a token on average (measured on CPU), enough to tell adapters apart."""
    generator = torch.Generator(device=student.device).manual_seed(seed)
    with torch.no_grad():
        for name, param in student.model.named_parameters():
            if "lora_B" in name:
                noise = torch.randn(param.shape, generator=generator, device=param.device, dtype=torch.float32)
                param.copy_(noise * std)


def count_tokens(student: StudentModel, texts: Sequence[str]) -> int:
    return sum(len(student.tokenizer(t, add_special_tokens=False)["input_ids"]) for t in texts)


def mean_abs_diff(a: Sequence[torch.Tensor], b: Sequence[torch.Tensor]) -> float:
    return (torch.cat(list(a)) - torch.cat(list(b))).abs().mean().item()


def correlation(a: torch.Tensor, b: torch.Tensor) -> float:
    return torch.corrcoef(torch.stack([a, b]))[0, 1].item()


def versions() -> str:
    names = ("torch", "transformers", "peft", "bitsandbytes", "vllm")
    found = []
    for name in names:
        try:
            found.append(f"{name} {importlib.metadata.version(name)}")
        except importlib.metadata.PackageNotFoundError:
            found.append(f"{name} -")
    return ", ".join(found)


def run(args: argparse.Namespace) -> int:
    started = time.perf_counter()
    config = load_config()
    print(f"[gpu_check] {torch.cuda.get_device_name()}; {versions()}", flush=True)
    memory = Memory()
    try:
        student = StudentModel.load(StudentSpec(name=args.model, device="cuda"), config.models)
    except OSError as exc:
        print(
            f"gpu_check: could not load {args.model!r}: {exc}\n"
            "The GPU box may have no internet: pass --model /path/to/a/local/checkpoint.",
            file=sys.stderr,
        )
        return 4
    print(f"[gpu_check] student loaded in {time.perf_counter() - started:.1f} s", flush=True)
    memory.note("loading the 4-bit student")
    perturb_lora(student, args.lora_noise, seed=1)

    system = config.training.environment.system_prompt
    prompts: list[Prompt] = [question_messages(q, system) for q in QUESTIONS[: args.prompts]]
    generation = config.models.generation  # models.yaml: T=0.7, top_p=0.95
    sampling = Sampling(args.max_new_tokens, temperature=generation.temperature, top_p=generation.top_p)
    timings: list[Timing] = []

    def report(timing: Timing) -> None:
        timings.append(timing)
        print(f"[timing] {timing.row()}", flush=True)

    # --- transformers ---
    student.generate(prompts[:1], replace(sampling, max_new_tokens=8))  # warm-up: kernels, allocator
    student.generation_batch_size = len(prompts)  # every prompt in one batch, as vLLM schedules them
    seconds, completions = timed(lambda: student.generate(prompts, sampling, n=args.n, seed=0), args.repeats)
    flat = [c for group in completions for c in group]
    report(Timing("transformers", "generate", seconds, count_tokens(student, flat)))

    # Completion j of the flat list answers prompt j // n; an empty one gets a stand-in text.
    picks = [i % len(flat) for i in range(args.pairs)]
    pair_prompts = [prompts[j // args.n] for j in picks]
    pair_completions = [flat[j] or "The answer is 42.\n#### 42" for j in picks]
    scored_tokens = sum(len(student.prompt_ids(p)) for p in pair_prompts) + count_tokens(student, pair_completions)
    seconds, tf_logprobs = timed(lambda: student.completion_logprobs(pair_prompts, pair_completions), args.repeats)
    report(Timing("transformers", "logprobs", seconds, scored_tokens))
    with student.reference():
        tf_reference = student.completion_logprobs(pair_prompts, pair_completions)
    memory.note("transformers timings")
    print(f"[memory] transformers peak allocated: {torch.cuda.max_memory_allocated() / 2**30:.1f} GiB", flush=True)

    failures: list[str] = []
    if not args.skip_vllm:
        pairs = Pairs(pair_prompts, pair_completions, tf_logprobs, tf_reference)
        with tempfile.TemporaryDirectory(prefix="gpu_check_adapter_") as adapter_dir:
            vllm_timings, failures = run_vllm(args, config.models, student, prompts, sampling, pairs, Path(adapter_dir))
        timings.extend(vllm_timings)
        memory.note("vLLM timings")

    print("\n" + HEADER)
    for timing in timings:
        print(timing.row())
    by_key = {(t.path, t.op): t for t in timings}
    for op in ("generate", "logprobs"):
        if ("vllm", op) in by_key:
            ratio = by_key[("vllm", op)].tokens_per_s / by_key[("transformers", op)].tokens_per_s
            print(f"vllm/transformers {op}: {ratio:.2f}x tokens/s")
    print(f"peak device memory in use: {max(used for _, used in memory.phases):.1f} GiB")
    print(f"total wall time: {time.perf_counter() - started:.0f} s")
    for failure in failures:
        print(f"FAIL: {failure}", file=sys.stderr)
    return 1 if failures else 0


@dataclass
class Pairs:
    """The log-prob workload and transformers' answers on it (with the adapter, and without)."""

    prompts: list[Prompt]
    completions: list[str]
    tf_logprobs: list[torch.Tensor]
    tf_reference: list[torch.Tensor]


def run_vllm(
    args: argparse.Namespace,
    models_config: ModelsConfig,
    student: StudentModel,
    prompts: list[Prompt],
    sampling: Sampling,
    pairs: Pairs,
    adapter_dir: Path,
) -> tuple[list[Timing], list[str]]:
    """The vLLM timings, and the checks that failed."""
    from alphazero_llm.models.vllm_engine import VLLMEngine

    timings: list[Timing] = []
    failures: list[str] = []
    student.save_adapter(adapter_dir)

    start = time.perf_counter()
    engine = VLLMEngine(
        args.model,
        student,
        models_config,
        gpu_memory_utilization=args.gpu_memory_utilization,
        enforce_eager=args.enforce_eager,
    )
    print(f"[gpu_check] vLLM started in {time.perf_counter() - start:.1f} s", flush=True)
    engine.set_adapter(adapter_dir)
    start = time.perf_counter()
    engine.generate(prompts[:1], replace(sampling, max_new_tokens=8))  # warm-up, the adapter's first load
    print(f"[gpu_check] vLLM first call with the adapter: {time.perf_counter() - start:.2f} s", flush=True)

    def report(timing: Timing) -> None:
        timings.append(timing)
        print(f"[timing] {timing.row()}", flush=True)

    seconds, completions = timed(lambda: engine.generate(prompts, sampling, n=args.n, seed=0), args.repeats)
    flat = [c for group in completions for c in group]
    report(Timing("vllm", "generate", seconds, count_tokens(student, flat)))
    if len(flat) != len(prompts) * args.n:
        failures.append(f"vLLM generate returned {len(flat)} completions, expected {len(prompts) * args.n}")

    scored_tokens = sum(len(student.prompt_ids(p)) for p in pairs.prompts) + count_tokens(student, pairs.completions)
    seconds, vllm_logprobs = timed(lambda: engine.completion_logprobs(pairs.prompts, pairs.completions), args.repeats)
    report(Timing("vllm", "logprobs", seconds, scored_tokens))
    with engine.reference():
        vllm_reference = engine.completion_logprobs(pairs.prompts, pairs.completions)

    # Agreement: same tokens, so the tensors line up one for one.
    gap = mean_abs_diff(pairs.tf_logprobs, vllm_logprobs)
    tf_effect = torch.cat(pairs.tf_logprobs) - torch.cat(pairs.tf_reference)
    vllm_effect = torch.cat(vllm_logprobs) - torch.cat(vllm_reference)
    effect_corr = correlation(tf_effect, vllm_effect)
    print(
        f"[agreement] mean |transformers - vLLM| log-prob: {gap:.4f} nats/token (nf4 vs bf16 base); "
        f"adapter effect: transformers {tf_effect.abs().mean():.4f}, vLLM {vllm_effect.abs().mean():.4f}, "
        f"correlation {effect_corr:.3f}",
        flush=True,
    )
    if vllm_effect.abs().mean() < 0.1 * tf_effect.abs().mean():
        failures.append("vLLM's log-probs barely change with the adapter: the LoRA is not applied")
    if not effect_corr >= 0.5:  # also when it is nan
        failures.append(f"the adapter's effect in vLLM and transformers disagree (correlation {effect_corr:.3f})")

    # A second adapter saved over the first: vLLM must serve the new weights after set_adapter.
    perturb_lora(student, args.lora_noise, seed=2)
    student.save_adapter(adapter_dir)
    tf_second = student.completion_logprobs(pairs.prompts, pairs.completions)
    engine.set_adapter(adapter_dir)
    start = time.perf_counter()
    vllm_second = engine.completion_logprobs(pairs.prompts, pairs.completions)
    print(f"[gpu_check] vLLM log-probs right after set_adapter: {time.perf_counter() - start:.2f} s", flush=True)
    to_new, to_old = mean_abs_diff(vllm_second, tf_second), mean_abs_diff(vllm_second, pairs.tf_logprobs)
    print(f"[agreement] after the second save: |vLLM - new| {to_new:.4f}, |vLLM - old| {to_old:.4f}", flush=True)
    if not to_new < to_old:
        failures.append("after set_adapter vLLM still serves the old adapter's weights")
    return timings, failures


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if not torch.cuda.is_available():
        print(
            "gpu_check: CUDA is not available. This check needs one NVIDIA GPU (e.g. an H100) and a CUDA "
            "build of torch; nothing was run.",
            file=sys.stderr,
        )
        return 2
    if not args.skip_vllm and importlib.util.find_spec("vllm") is None:
        print(
            "gpu_check: vLLM is not installed. Run bench/gpu_check.sh (it installs it), or "
            "pip install -e '.[vllm]', or pass --skip-vllm to time transformers only.",
            file=sys.stderr,
        )
        return 3
    return run(args)


if __name__ == "__main__":  # vLLM starts its engine with spawn once CUDA is initialised: keep this guard
    sys.exit(main())
