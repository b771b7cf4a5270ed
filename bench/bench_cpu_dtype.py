"""The CPU student's dtype (models.yaml `student.cpu_dtype`): bf16 against fp32, same model, same work, one run.

    python bench/bench_cpu_dtype.py [--group 6] [--completion-tokens 36] [--new-tokens 64] [--repeats 3]

Workload, per dtype, on the embedded SmolLM2-135M-Instruct with models.yaml's LoRA (r=32):
- update: one training step's passes, the way `Trainer.update` makes them: reference log-probs without
  grad (adapter disabled), then the policy's log-probs of `--group` completions of `--completion-tokens`
  tokens after a GSM8K question's chat prompt, their sum's backward;
- generate: greedy answers of `--new-tokens` new tokens to 4 GSM8K questions, batched (the evaluation's
  work), in new tokens per second.

Both dtypes score and generate the same token ids. Medians over `--repeats` after one warm-up. The CPU's
flags decide the outcome: without native bf16 (avx512_bf16 / AMX) the bf16 backward falls back to slow
kernels, so print them too.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch

from alphazero_llm.config import load_config
from alphazero_llm.data import Gsm8kSource, load_gsm8k
from alphazero_llm.models.prompts import question_messages
from alphazero_llm.models.sampling import Sampling
from alphazero_llm.models.student import StudentModel, StudentSpec


def cpu_flags() -> str:
    flags = Path("/proc/cpuinfo").read_text(encoding="utf-8") if Path("/proc/cpuinfo").is_file() else ""
    found = [f for f in ("avx512_bf16", "amx_bf16", "avx512f", "avx2") if f" {f}" in flags]
    return ", ".join(found) or "none of avx512_bf16, amx_bf16, avx512f, avx2"


def median_time(step, repeats: int) -> float:
    step()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def measure(dtype: str, questions: list[str], args: argparse.Namespace) -> tuple[float, float]:
    config = load_config()
    student = StudentModel.load(StudentSpec(name="embedded", device="cpu", dtype=dtype), config.models)
    system = config.training.environment.system_prompt
    prompt = student.prompt_ids(question_messages(questions[0], system))
    generator = torch.Generator().manual_seed(0)
    completions = [
        torch.randint(100, 20_000, (args.completion_tokens,), generator=generator).tolist() for _ in range(args.group)
    ]

    def update() -> None:
        with torch.no_grad(), student.reference():
            student.token_logprobs([prompt] * args.group, completions, temperature=1.0)
        student.model.train()
        logprobs = student.token_logprobs([prompt] * args.group, completions, temperature=1.0)
        sum(lp.sum() for lp in logprobs).backward()
        student.model.zero_grad(set_to_none=True)
        student.model.eval()

    chats = [question_messages(q, system) for q in questions]
    greedy = Sampling(args.new_tokens, temperature=0.0, top_p=1.0)

    def generate() -> None:
        student.generate(chats, greedy)

    update_s = median_time(update, args.repeats)
    generate_s = median_time(generate, args.repeats)
    return update_s, len(questions) * args.new_tokens / generate_s


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--group", type=int, default=6)
    parser.add_argument("--completion-tokens", type=int, default=36)
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--dataset-path", default=None, help="GSM8K as the library finds it (default: $GSM8K_PATH)")
    args = parser.parse_args()
    questions = load_gsm8k("test", Gsm8kSource.resolve(args.dataset_path), num_examples=4)["question"]
    print(f"CPU flags: {cpu_flags()}; torch {torch.__version__}, {torch.get_num_threads()} threads")
    results = {dtype: measure(dtype, questions, args) for dtype in ("bfloat16", "float32")}
    print(f"{'dtype':<10}{'update s':>10}{'generate tok/s':>16}")
    for dtype, (update_s, tok_s) in results.items():
        print(f"{dtype:<10}{update_s:>10.2f}{tok_s:>16.1f}")
    (bf_update, bf_tok), (fp_update, fp_tok) = results["bfloat16"], results["float32"]
    print(f"update: bf16 takes {bf_update / fp_update:.1f}x fp32's time; generation: fp32 runs at "
          f"{fp_tok / bf_tok:.2f}x bf16's speed")  # fmt: skip


if __name__ == "__main__":
    main()
