"""One GRPO update: the project's `Trainer.update` against TRL's `GRPOTrainer`, same model, same batch, same run.

    GSM8K_PATH=../shared/data/gsm8k python bench/bench_update.py [--group 8] [--repeats 5] [--dtype bfloat16]
        [--max-completion-tokens 256] [--loss-type grpo|bnpo|dr_grpo] [--question 2] [--threads 1]
        [--lora-dropout P] [--seed 0] [--dataset-path DIR]

Workload: the embedded student (SmolLM2-135M-Instruct, LoRA r=32 from models.yaml, on CPU) and one
GSM8K test question (`--question`, default 2, whose gold solution is 213 tokens) with `--group`
completions: the gold solution and variants of it (reasoning lines shuffled, dropped or repeated),
each ending with EOS and cut to `--max-completion-tokens`; fixed rewards (gold 1.0, the others
seeded). Both sides start from the same adapter weights (seeded, with a non-zero B so that the
policy differs from the reference and the KL term is not trivially 0) and use training.yaml's
GRPO and optimiser settings (beta, clip epsilon, learning rate, weight decay, max grad norm,
micro-batch size) and models.yaml's LoRA dropout (`--lora-dropout` overrides it in both). One loss
type (`--loss-type`, default training.yaml's `grpo.loss_type`) and one completion budget
(`--max-completion-tokens`: our `run.max_completion_tokens`, TRL's `max_completion_length`, which is
also dr_grpo's constant normaliser) are set once and read by both sides. GSM8K is found as the
library finds it (training/run.py): `--dataset-path`, else training.yaml's `dataset.path`, else
$GSM8K_PATH, else the hub (`--dataset-path tests/fixtures/gsm8k_mini` runs offline on 6 questions).
A failing variant's command and stderr tail are printed, and the bench exits non-zero.

What one step is, per variant (each runs in its own subprocess):

- ours: `Trainer.update(batch)`, the batch being `Trainer.batch` of a fixed `Group` that a tiny trajectory
  source hands the `Trainer` (the prompt ids `assembly.student_policy(...).prompt_ids(problem)`, the
  completions' ids the tokenised texts, terminal, so the Trainer adds EOS; log-probs at temperature 1,
  TRL's default): reference log-probs without grad (`StudentModel.token_logprobs`,
  the reference via `StudentModel.reference()`, i.e. the adapter disabled), then `grpo_loss` per
  micro-batch (on-policy, the old log-probs are the policy's own, detached, as TRL's), backward,
  clip, AdamW step.
- trl: a real `trl.GRPOTrainer` built on the same base model with the same `peft.LoraConfig`
  (TRL wraps it; its reference is then the adapter disabled too, `ref_model is None`), our loss type and
  `max_completion_length` (`trl_loss_kwargs`: TRL's "grpo", "bnpo" and "dr_grpo" normalise as
  `training/grpo.py`'s `aggregate` does), the same beta / epsilon / optimiser (`adamw_torch`),
  no gradient checkpointing, no bf16 autocast, `per_device_train_batch_size` = micro-batch,
  `gradient_accumulation_steps` = group / micro-batch.
  Its `rollout_func` hands TRL our prompt and completion token ids, and a reward function returns
  the fixed rewards; `trainer.train()` then runs TRL's own code for everything else (advantages,
  reference log-probs under `use_adapter(model, None)`, `_compute_loss` per micro-batch, backward,
  clip, optimiser step). The time of one step is from `on_step_begin` to `on_step_end` of a
  callback, which brackets exactly that. TRL on-policy (num_iterations=1) does NOT compute old
  log-probs: it uses the detached policy log-probs, as ours does, so both run the same passes.
- trl+old: the same with `num_iterations=2`, the setting in which TRL does compute old log-probs
  (one no-grad forward more than ours); only the steps that score the rollouts are timed.

Time: median over `--repeats` steps after one warm-up, wall clock and process CPU time (with one
torch thread, CPU time is the figure a busy machine disturbs least). Memory: RSS before the first
step, the high-water RSS over the steps (the kernel's high-water mark is reset just before the
first step through /proc/self/clear_refs, so loading does not count; `ru_maxrss` is read after),
the step's growth (peak minus pre-step) and the process peak including loading. A fourth
subprocess measures the reference's weight memory: unique tensor storage bytes of the student's
parameters and buffers before, inside and after our reference (`ReferencePolicy` /
`student.reference()`), versus `copy.deepcopy(model)`, the seed's original reference, and the
optional snapshot adapter (`update_ref_every > 0`).

Caveats: on CPU, TRL's fused LM head scores every position (the prompt's too) with its torch
fallback, because its compact Triton path is for CUDA/XPU only; on a GPU TRL scores only the
completion, so these ratios are CPU ratios. Ours runs the prompt once per micro-batch (shared KV
cache) and the LM head only on completion tokens. The first-step loss and grad norm are a check
that both sides compute the same update: the bench prints each side's, their relative difference,
and whether the losses agree within `LOSS_RTOL` (1e-3), naming what explains a difference. With
LoRA dropout on they differ by the dropout masks. In bf16 the first-step loss is not a parity
check: on-policy the policy term is -sum_i A_i |o_i| / (G L) under dr_grpo (0 when every completion
is cut to the same length L, and always ~0 under grpo), so the loss is beta * KL, and rounding in
the bf16 policy and reference forwards moves that small KL by tens of percent, differently on each
side (ours shares the prompt's KV cache, TRL runs the whole sequence). In float32 the losses agree
to 1.5e-4, which TRL's advantage eps (1e-4; ours 1e-6; max advantage difference 5.6e-4) explains.
Measured 2026-12-01, `--lora-dropout 0 --repeats 1`, trl and trl+old alike (the same first step):

    dtype     loss type  tokens  loss ours   loss trl    rel. diff  gnorm ours  gnorm trl  rel. diff
    bfloat16  dr_grpo    64      2.67863e-4  2.00152e-4  2.5e-01    0.2257      0.2237     8.9e-03
    float32   dr_grpo    64      1.21474e-4  1.21493e-4  1.5e-04    0.2246      0.2244     1.2e-03
    float32   grpo       64      1.21504e-4  1.21504e-4  0.0e+00    0.2246      0.2244     1.2e-03
    float32   bnpo       64      1.21474e-4  1.21493e-4  1.5e-04    0.2246      0.2244     1.2e-03
    float32   dr_grpo    256     3.64664e-2  3.64525e-2  3.8e-04    0.1047      0.1028     1.8e-02

("tokens": `--max-completion-tokens`; at 64 all 8 completions are cut to 64 tokens, so the three loss
types differ only by rounding; at 256 they have 1688 tokens in all and dr_grpo's policy term is the
loss.) The grad norms differ by up to 1.8% in float32, more than the losses; our log-probs' gradient
through the shared prompt KV cache matches a whole-sequence forward's to 9e-5 (relative, float32),
so that gap is not in our scoring path and is not explained here.
Before the loss type was shared, TRL ran "grpo" against our configured "dr_grpo": different losses
(0.043 vs 0.00047).

Results (2026-11-26, this machine: 2 CPU cores, a training run beside it; defaults: prompt 98
tokens, G=8 completions of 1688 tokens in all, longest 256, bf16, 1 thread; loss_type "grpo" on
both sides then: the loss type changes no pass, so the times and memory stand):

    variant      wall s      cpu s   pre-step  step peak     step +  proc peak  loss(1st) gnorm(1st)
    ours          21.50      21.06      906.0     4552.6     3646.5     4552.6    0.00034     0.1299
    trl           39.32      38.26      842.6     6356.8     5514.3     6356.8    0.00031     0.1309
    trl+old       51.77      47.15      839.1     6444.0     5604.9     6444.0    0.00124     0.1481
    ours / trl: time 0.55x, cpu time 0.55x, step peak 0.72x, step growth 0.66x
    ours / trl+old: time 0.42x, cpu time 0.45x, step peak 0.71x, step growth 0.65x
    (memory in MiB of RSS)

    checks: same adapter weights, same parameter bytes (293.8 MiB), 1 torch thread each;
    TRL: ref_model is None, no 'ref' adapter added; old log-probs computed: trl no, trl+old yes.

    reference weight memory (unique storage bytes of the student's parameters and buffers):
    student (bf16 base + fp32 LoRA)                293.8 MiB
    ours, inside student.reference()               293.8 MiB  (+0.0 MiB, 0 bytes)
    ours, after ReferencePolicy                    293.8 MiB  (+0.0 MiB, 0 bytes)
    seed's reference: copy.deepcopy(model)         587.7 MiB  (+293.8 MiB, 308106112 bytes), RSS +305.1
    ours, snapshot adapter (update_ref_every>0)    331.1 MiB  (+37.3 MiB, 39075840 bytes)

On 2026-12-01 (a 2-core AMD EPYC without bf16 instructions) bf16 ran about 15x slower than float32
(ours 156 s vs 10 s a step at 64 tokens); float32 at the defaults (256 tokens, `--repeats 1`) gave
ours 38.0 s, trl 69.4 s, trl+old 95.2 s a step: ours / trl 0.55x, ours / trl+old 0.40x, step peak
0.72x / 0.70x, as above.

Ours ran a separate no-grad forward for the old log-probs until commit dff3295 (then 28.65 s CPU,
0.75x TRL's); on-policy that forward gave the current policy's log-probs again, so it was dropped.
Shorter completions (16 or 64 tokens, `--repeats 1`, where the prompt weighs more) gave ours 0.32-0.55x
TRL's time with that forward (wall and CPU, three short runs).
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import random
import resource
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from alphazero_llm.config import Config, DatasetConfig, load_config, override
from alphazero_llm.config import GRPOConfig as GRPOSettings
from alphazero_llm.data import Gsm8kSource, Problem, load_gsm8k
from alphazero_llm.models.student import StudentModel, StudentSpec
from alphazero_llm.training.assembly import student_policy
from alphazero_llm.training.grpo import LOSS_TYPES
from alphazero_llm.trajectory import Group, Step, Trajectory

VARIANTS = ("memory", "ours", "trl", "trl+old")
ADAPTER_SEED = 1234
ADAPTER_B_STD = 0.01  # LoRA B ~ N(0, 0.01^2): the policy is a little away from the reference
MIB = 1024 * 1024
# First-step losses that differ by less than this (relative) agree. With LoRA dropout 0 and float32 both
# sides compute the same update; what remains is TRL's advantage eps (1e-4, ours 1e-6): measured 1.5e-4.
LOSS_RTOL = 1e-3
STDERR_TAIL_LINES = 40
HEADER = ("variant", "wall s", "cpu s", "pre-step", "step peak", "step +", "proc peak", "loss(1st)", "gnorm(1st)")


# --- pure helpers ----------------------------------------------------------------------------------


def unique_storage_bytes(tensors: Iterable[torch.Tensor]) -> int:
    """Bytes of the distinct storages behind `tensors`: tied or shared weights count once."""
    seen: dict[tuple[str, int], int] = {}
    for tensor in tensors:
        storage = tensor.untyped_storage()
        seen[(str(tensor.device), storage.data_ptr())] = storage.nbytes()
    return sum(seen.values())


def model_tensors(*models: torch.nn.Module) -> list[torch.Tensor]:
    return [t for m in models for t in (*m.parameters(), *m.buffers())]


def trl_loss_kwargs(grpo: GRPOSettings, max_completion_tokens: int) -> dict[str, Any]:
    """TRL GRPOConfig arguments that make its loss ours: the same `loss_type` (TRL's "grpo", "bnpo" and
    "dr_grpo" normalise exactly as `training/grpo.py`'s `aggregate` does), beta, clip epsilon, and
    `max_completion_length` = our `run.max_completion_tokens` (dr_grpo's constant normaliser, and the cut)."""
    if grpo.loss_type not in LOSS_TYPES:
        raise ValueError(f"unknown loss_type {grpo.loss_type!r}; ours: {list(LOSS_TYPES)}")
    if grpo.entropy_coef != 0.0:
        raise ValueError(f"TRL's GRPO loss has no entropy bonus; set grpo.entropy_coef to 0, not {grpo.entropy_coef}")
    if max_completion_tokens <= 0:
        raise ValueError(f"max_completion_tokens must be positive, got {max_completion_tokens}")
    return {
        "loss_type": grpo.loss_type,
        "beta": grpo.beta,
        "epsilon": grpo.clip_epsilon,
        "max_completion_length": max_completion_tokens,
    }


def relative_difference(a: float, b: float) -> float:
    """|a - b| relative to the larger magnitude; 0 when both are 0."""
    scale = max(abs(a), abs(b))
    return 0.0 if scale == 0 else abs(a - b) / scale


def losses_agree(ours: float, theirs: float, rtol: float = LOSS_RTOL) -> bool:
    return relative_difference(ours, theirs) <= rtol


def loss_verdict(ours: float, theirs: float, dtype: str, lora_dropout: float) -> str:
    """Whether two first-step losses agree within LOSS_RTOL, and when not, what this run's settings leave
    to explain it (dropout masks, bf16 rounding) or that nothing does."""
    if losses_agree(ours, theirs):
        return "yes"
    reasons = []
    if lora_dropout > 0:
        reasons.append(f"LoRA dropout {lora_dropout}: the sides draw different masks (--lora-dropout 0)")
    if dtype != "float32":
        reasons.append(
            f"{dtype}: rounding in the policy and reference forwards moves the KL term, all of the first step's "
            "loss when the completions have equal lengths (--dtype float32)"
        )
    return "NO (" + "; ".join(reasons) + ")" if reasons else "NO: the two sides compute different losses"


def tail(text: str, lines: int = STDERR_TAIL_LINES) -> str:
    """The last `lines` lines of `text`."""
    return "\n".join(text.rstrip().splitlines()[-lines:])


def gsm8k_source(dataset: DatasetConfig) -> Gsm8kSource:
    """As the library resolves it (training/run.py): dataset.path (set by --dataset-path), else $GSM8K_PATH,
    else the hub."""
    return Gsm8kSource.resolve(dataset.path, dataset.name, dataset.config)


def fixed_rewards(group: int, seed: int) -> list[float]:
    """The gold solution 1.0, the others seeded in [0, 1): a group with something to prefer."""
    rng = random.Random(seed)
    return [1.0] + [round(rng.random(), 2) for _ in range(group - 1)]


def variant_texts(solution: str, group: int, seed: int) -> list[str]:
    """The gold solution and `group - 1` variants: reasoning lines shuffled, one dropped, or repeated."""
    rng = random.Random(seed)
    *steps, final = solution.strip().split("\n")
    texts = [solution.strip()]
    for k in range(group - 1):
        lines = list(steps)
        rng.shuffle(lines)
        if k % 3 == 1 and len(lines) > 1:
            lines = lines[1:]
        elif k % 3 == 2:
            lines = lines + lines  # a verbose trajectory that checks its steps again
        texts.append("\n".join([*lines, final]))
    return texts


# --- process memory (Linux) ------------------------------------------------------------------------


def current_rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize()


def peak_rss() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux


def reset_peak_rss() -> bool:
    """Reset the kernel's high-water RSS mark (Linux >= 4.0); False where that is not allowed."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        return False
    return True


# --- the batch -------------------------------------------------------------------------------------


# The log-probs' temperature: TRL's default (its GRPOConfig's is not set here), so both score the same distribution.
TEMPERATURE = 1.0


@dataclass(frozen=True)
class Workload:
    problem: Problem
    messages: list[dict[str, str]]
    group: Group  # the fixed group ours trains on: the prompt ids and the texts' ids, EOS not yet appended
    prompt_ids: list[int]
    completion_ids: list[list[int]]  # as both sides score them: the texts' ids, EOS, cut to the budget
    rewards: list[float]


def fixed_group(
    problem: Problem, prompt_ids: Sequence[int], texts: Sequence[str], rewards: Sequence[float], tokenizer: Any
) -> Group:
    """One terminal trajectory per text (one step: the text's token ids), with its fixed reward."""
    trajectories = []
    for text, reward in zip(texts, rewards, strict=True):
        ids = tuple(tokenizer(text, add_special_tokens=False)["input_ids"])
        step = Step(text, ids, "reference", "bench", "right")
        trajectories.append(Trajectory((step,), reward, True, None, None, False, None))
    return Group(problem, tuple(prompt_ids), tuple(trajectories), TEMPERATURE)


def build_workload(student: StudentModel, config: Config, args: argparse.Namespace) -> Workload:
    source = gsm8k_source(config.training.dataset)
    rows = load_gsm8k("test", source, num_examples=args.question + 1)
    if len(rows) <= args.question:
        raise ValueError(f"--question {args.question}: the test split of {source} has only {len(rows)} rows")
    row = rows[args.question]
    problem = Problem.from_row(row)
    policy = student_policy(student, config, args.seed)  # the run's prompt: what the search and the loss use
    prompt_ids = policy.prompt_ids(problem)
    rewards = fixed_rewards(args.group, args.seed)
    group = fixed_group(
        problem, prompt_ids, variant_texts(problem.solution, args.group, args.seed), rewards, student.tokenizer
    )
    eos = student.tokenizer.eos_token_id
    budget = config.training.run.max_completion_tokens
    completions = [[*t.completion_ids, eos][:budget] for t in group.trajectories]
    return Workload(problem, policy.chat(problem), group, list(prompt_ids), completions, rewards)


def seed_adapter(model: torch.nn.Module) -> float:
    """Set every LoRA weight of the "default" adapter from a fixed generator; returns a fingerprint (their sum)."""
    gen = torch.Generator().manual_seed(ADAPTER_SEED)
    total = 0.0
    with torch.no_grad():
        for name, param in sorted(model.named_parameters()):
            if ".lora_A.default." in name:
                bound = param.shape[1] ** -0.5
                values = (torch.rand(param.shape, generator=gen) * 2 - 1) * bound
            elif ".lora_B.default." in name:
                values = torch.randn(param.shape, generator=gen) * ADAPTER_B_STD
            else:
                continue
            param.copy_(values)
            total += float(param.double().sum())
    return total


def load_student(args: argparse.Namespace, config: Config, lora: bool) -> StudentModel:
    spec = StudentSpec(name="embedded", device="cpu", dtype=args.dtype, lora=lora)
    return StudentModel.load(spec, config.models)


# --- variants (each in its own process) ------------------------------------------------------------


@dataclass
class StepReport:
    variant: str
    seconds: list[float] = field(default_factory=list)
    cpu_seconds: list[float] = field(default_factory=list)  # process CPU time: robust to a busy machine
    pre_step_rss: int = 0
    step_peak_rss: int = 0
    load_peak_rss: int = 0
    peak_reset: bool = False
    first_loss: float | None = None
    first_grad_norm: float | None = None
    adapter_fingerprint: float = 0.0
    model_bytes: int = 0
    advantages: list[float] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)


def run_ours(args: argparse.Namespace, config: Config) -> StepReport:
    from alphazero_llm.training.grpo import group_advantages
    from alphazero_llm.training.loop import Trainer

    torch.manual_seed(args.seed)
    student = load_student(args, config, lora=True)
    report = StepReport("ours", adapter_fingerprint=seed_adapter(student.model))
    report.model_bytes = unique_storage_bytes(model_tensors(student.model))
    work = build_workload(student, config, args)

    def fixed(problem: Problem, rng: random.Random, step: int) -> Group:
        return work.group

    with tempfile.TemporaryDirectory() as tmp:
        training = override(
            config.training,
            {
                "seed": args.seed,
                "run.num_examples": args.repeats + 1,
                "run.checkpoint_dir": tmp,
                "run.save_every": 1,
                "run.log_interval": 1,
                "run.loss": "grpo",
            },
        )
        trainer = Trainer(student, fixed, [work.problem], training)
        report.extra.update(
            loss_type=trainer.config.grpo.loss_type, max_completion_length=trainer.run_config.max_completion_tokens
        )
        batch = trainer.batch(trainer.source(work.problem, trainer.rng, 0))
        if batch.completion_ids != work.completion_ids or batch.prompt_ids != work.prompt_ids:
            raise RuntimeError("the Trainer's batch is not the workload TRL is given")
        report.advantages = group_advantages(batch.rewards, config.training.grpo.advantage_clip).tolist()
        lengths = [len(ids) for ids in batch.completion_ids]
        report.extra.update(prompt_tokens=len(batch.prompt_ids), completion_tokens=sum(lengths), longest=max(lengths))
        report.load_peak_rss = peak_rss()
        report.pre_step_rss = current_rss()
        report.peak_reset = reset_peak_rss()
        report.extra["threads"] = torch.get_num_threads()
        for step in range(args.repeats + 1):
            start, cpu_start = time.perf_counter(), time.process_time()
            out = trainer.update(batch)
            elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu_start
            if not out["updated"]:
                raise RuntimeError(f"the update did not step the optimiser: {out}")
            if step == 0:
                report.first_loss, report.first_grad_norm = out["loss"], out["grad_norm"]
            else:
                report.seconds.append(elapsed)
                report.cpu_seconds.append(cpu)
            trainer.step += 1
        report.step_peak_rss = peak_rss()
    return report


def trl_config(args: argparse.Namespace, config: Config, output_dir: Path, steps: int, iterations: int) -> Any:
    """TRL's GRPOConfig with our GRPO and optimiser settings, on CPU, without what ours does not do."""
    from trl import GRPOConfig

    opt = config.training.optimizer
    micro = opt.micro_batch_size
    if args.group % micro:
        raise ValueError(f"--group ({args.group}) must be a multiple of the micro-batch size ({micro})")
    return GRPOConfig(
        output_dir=str(output_dir), report_to="none", use_cpu=True, bf16=False, fp16=False,
        gradient_checkpointing=False, seed=args.seed, max_steps=steps, logging_steps=1, save_strategy="no",
        disable_dropout=False, per_device_train_batch_size=micro, gradient_accumulation_steps=args.group // micro,
        num_generations=args.group, num_iterations=iterations, optim="adamw_torch",
        **trl_loss_kwargs(config.training.grpo, config.training.run.max_completion_tokens),
        learning_rate=opt.learning_rate, weight_decay=opt.weight_decay, max_grad_norm=opt.max_grad_norm,
        warmup_steps=opt.warmup_steps, dataloader_num_workers=0,
    )  # fmt: skip


def peft_lora(config: Config) -> Any:
    """The peft.LoraConfig that `StudentModel.load` builds from models.yaml, for TRL to apply."""
    from peft import LoraConfig

    lora = config.models.lora
    return LoraConfig(
        r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout, bias=lora.bias,
        target_modules=list(lora.target_modules), task_type="CAUSAL_LM",
    )  # fmt: skip


def run_trl(args: argparse.Namespace, config: Config, old_logprobs: bool) -> StepReport:
    import datasets
    from transformers import TrainerCallback
    from trl import GRPOTrainer

    torch.manual_seed(args.seed)
    student = load_student(args, config, lora=False)
    work = build_workload(student, config, args)
    report = StepReport("trl+old" if old_logprobs else "trl")
    iterations = 2 if old_logprobs else 1
    steps = (args.repeats + 1) * iterations

    def rollout(prompts: list[Any], trainer: Any) -> dict[str, Any]:
        if len(prompts) != args.group:
            raise RuntimeError(f"TRL asked for {len(prompts)} rollouts, expected one group of {args.group}")
        return {"prompt_ids": [work.prompt_ids] * args.group, "completion_ids": work.completion_ids, "logprobs": None}

    def fixed_reward(prompts: list[Any], completions: list[Any], completion_ids: list[list[int]], **_: Any):
        if [list(ids) for ids in completion_ids] != work.completion_ids:
            raise RuntimeError("TRL scored other completions than the rollout returned, or in another order")
        return list(work.rewards)

    class StepTimer(TrainerCallback):
        def __init__(self) -> None:
            self.start = self.cpu_start = 0.0
            self.scored = False  # did this step score rollouts (old/ref log-probs, advantages)?

        def on_step_begin(self, *_: Any, **__: Any) -> None:
            if not report.pre_step_rss:
                report.load_peak_rss = peak_rss()
                report.pre_step_rss = current_rss()
                report.peak_reset = reset_peak_rss()
                report.extra["threads"] = torch.get_num_threads()
            self.scored = False
            self.start, self.cpu_start = time.perf_counter(), time.process_time()

        def on_step_end(self, *_: Any, **__: Any) -> None:
            elapsed, cpu = time.perf_counter() - self.start, time.process_time() - self.cpu_start
            if self.scored:
                timings.append((elapsed, cpu))

    timer, timings = StepTimer(), []
    with tempfile.TemporaryDirectory() as tmp:
        grpo_args = trl_config(args, config, Path(tmp), steps, iterations)
        dataset = datasets.Dataset.from_dict({"prompt": [work.messages] * steps})
        trainer = GRPOTrainer(
            model=student.model, reward_funcs=fixed_reward, args=grpo_args, train_dataset=dataset,
            processing_class=student.tokenizer, peft_config=peft_lora(config), rollout_func=rollout, callbacks=[timer],
        )  # fmt: skip
        report.adapter_fingerprint = seed_adapter(trainer.model)
        report.model_bytes = unique_storage_bytes(model_tensors(trainer.model))
        report.extra["ref_model_is_none"] = trainer.ref_model is None
        report.extra["ref_adapter"] = "ref" in getattr(trainer.model, "peft_config", {})
        report.extra.update(loss_type=trainer.loss_type, max_completion_length=trainer.max_completion_length)
        score = trainer._generate_and_score_completions  # TRL's own; wrapped only to note that it ran

        def scored(inputs: Any) -> Any:
            out = score(inputs)
            timer.scored = True
            if not report.advantages:
                report.advantages = out["advantages"].tolist()
                report.extra["old_logprobs_computed"] = out.get("old_per_token_logps") is not None
            return out

        trainer._generate_and_score_completions = scored
        trainer.train()
        report.step_peak_rss = peak_rss()
        logs = [entry for entry in trainer.state.log_history if "loss" in entry]
        report.first_loss, report.first_grad_norm = logs[0]["loss"], logs[0].get("grad_norm")
    if len(timings) != args.repeats + 1:
        raise RuntimeError(f"expected {args.repeats + 1} scoring steps, timed {len(timings)}")
    report.seconds = [wall for wall, _ in timings[1:]]  # the first is the warm-up
    report.cpu_seconds = [cpu for _, cpu in timings[1:]]
    return report


def run_memory(args: argparse.Namespace, config: Config) -> dict[str, Any]:
    from alphazero_llm.training.loop import ReferencePolicy

    student = load_student(args, config, lora=True)
    model = student.model
    out: dict[str, Any] = {"student": unique_storage_bytes(model_tensors(model))}
    reference = ReferencePolicy(student, update_every=0)
    with reference.active():
        out["inside_reference"] = unique_storage_bytes(model_tensors(model))
    out["after_reference"] = unique_storage_bytes(model_tensors(model))
    rss = current_rss()
    duplicate = copy.deepcopy(model)
    out["deepcopy_rss_added"] = current_rss() - rss
    out["with_deepcopy"] = unique_storage_bytes(model_tensors(model, duplicate))
    del duplicate
    ReferencePolicy(student, update_every=1).snapshot()
    out["with_snapshot_adapter"] = unique_storage_bytes(model_tensors(model))
    return out


# --- driver ----------------------------------------------------------------------------------------


def run_variant(args: argparse.Namespace) -> None:
    torch.set_num_threads(args.threads)
    config = load_config()
    if args.lora_dropout is not None:
        lora = dataclasses.replace(config.models.lora, dropout=args.lora_dropout)
        config = dataclasses.replace(config, models=dataclasses.replace(config.models, lora=lora))
    # One loss type, one completion budget and one data source, read by both sides from here.
    training = override(
        config.training,
        {
            "grpo.loss_type": args.loss_type,
            "run.max_completion_tokens": args.max_completion_tokens,
            "dataset.path": args.dataset_path,
        },
    )
    config = dataclasses.replace(config, training=training)
    if args.variant == "memory":
        result: dict[str, Any] = run_memory(args, config)
    elif args.variant == "ours":
        result = asdict(run_ours(args, config))
    else:
        result = asdict(run_trl(args, config, old_logprobs=args.variant == "trl+old"))
    Path(args.out).write_text(json.dumps(result))


def spawn(variant: str, argv: Sequence[str]) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "result.json"
        cmd = [sys.executable, __file__, *argv, "--variant", variant, "--out", str(out)]
        done = subprocess.run(cmd, capture_output=True, text=True)
        if done.returncode != 0:
            print(f"$ {shlex.join(cmd)}\n{tail(done.stderr)}", file=sys.stderr)
            sys.exit(f"bench_update: the {variant!r} variant failed (exit {done.returncode}); see its stderr above")
        return json.loads(out.read_text())


def mib(n: float) -> str:
    return f"{n / MIB:.1f}"


def median(r: dict[str, Any], key: str = "seconds") -> float:
    return statistics.median(r[key])


def growth(r: dict[str, Any]) -> int:
    return r["step_peak_rss"] - r["pre_step_rss"]


def row(cells: Sequence[str]) -> str:
    return f"{cells[0]:8s}" + "".join(f"{c:>11s}" for c in cells[1:])


def step_table(args: argparse.Namespace, runs: dict[str, dict[str, Any]]) -> list[str]:
    shape = runs["ours"]["extra"]
    lines = [
        f"One GRPO update: embedded SmolLM2-135M {args.dtype} + LoRA r=32 on CPU ({args.threads} thread), "
        f"GSM8K test question {args.question}, prompt {shape['prompt_tokens']} tokens, G={args.group} completions "
        f"of {shape['completion_tokens']} tokens in all (longest {shape['longest']}); "
        f"median of {args.repeats} steps after 1 warm-up; memory in MiB of RSS.",
        row(HEADER),
    ]
    for name, r in runs.items():
        process_peak = max(r["load_peak_rss"], r["step_peak_rss"])
        cells = [
            name, f"{median(r):.2f}", f"{median(r, 'cpu_seconds'):.2f}", mib(r["pre_step_rss"]),
            mib(r["step_peak_rss"]), mib(growth(r)), mib(process_peak), f"{r['first_loss']:.5f}",
            f"{r['first_grad_norm']:.4f}",
        ]  # fmt: skip
        lines.append(row(cells))
    ours = runs["ours"]
    for name in ("trl", "trl+old"):
        r = runs[name]
        lines.append(
            f"ours / {name}: time {median(ours) / median(r):.2f}x, "
            f"cpu time {median(ours, 'cpu_seconds') / median(r, 'cpu_seconds'):.2f}x, "
            f"step peak {ours['step_peak_rss'] / r['step_peak_rss']:.2f}x, "
            f"step growth {growth(ours) / max(1, growth(r)):.2f}x"
        )
    return lines


def check_lines(runs: dict[str, dict[str, Any]]) -> list[str]:
    ours = runs["ours"]
    fingerprints = {name: round(r["adapter_fingerprint"], 6) for name, r in runs.items()}
    lines = [
        "checks:",
        f"  same adapter weights: {len(set(fingerprints.values())) == 1} (fingerprints {fingerprints})",
        f"  same parameter bytes: {len({r['model_bytes'] for r in runs.values()}) == 1} "
        f"({mib(ours['model_bytes'])} MiB); torch threads {[r['extra']['threads'] for r in runs.values()]}; "
        f"high-water mark reset: {all(r['peak_reset'] for r in runs.values())}",
    ]
    for name in ("trl", "trl+old"):
        extra = runs[name]["extra"]
        diff = max(abs(a - b) for a, b in zip(ours["advantages"], runs[name]["advantages"], strict=True))
        lines.append(
            f"  {name}: ref_model is None: {extra['ref_model_is_none']}; 'ref' adapter added: {extra['ref_adapter']}; "
            f"old log-probs computed: {extra['old_logprobs_computed']}; max |advantage - ours| {diff:.1e}"
        )
    return lines


def loss_lines(runs: dict[str, dict[str, Any]], dtype: str, lora_dropout: float) -> list[str]:
    """Each TRL variant's first-step loss and grad norm against ours: relative differences, and whether the
    losses agree."""
    ours = runs["ours"]
    settings = {name: (r["extra"]["loss_type"], r["extra"]["max_completion_length"]) for name, r in runs.items()}
    if len(set(settings.values())) == 1:
        loss_type, length = settings["ours"]
        same = f"loss_type {loss_type!r} and max_completion_length {length} on every side"
    else:
        same = f"NOT the same loss on every side: (loss_type, max_completion_length) {settings}"
    lines = [f"first step, {same}:"]
    for name in ("trl", "trl+old"):
        theirs = runs[name]
        loss, norm = (ours["first_loss"], theirs["first_loss"]), (ours["first_grad_norm"], theirs["first_grad_norm"])
        lines.append(
            f"  loss ours {loss[0]:.6g}, {name} {loss[1]:.6g}: relative difference {relative_difference(*loss):.1e}; "
            f"agree within {LOSS_RTOL:g}: {loss_verdict(*loss, dtype, lora_dropout)}"
        )
        lines.append(
            f"  grad norm ours {norm[0]:.6g}, {name} {norm[1]:.6g}: relative difference "
            f"{relative_difference(*norm):.1e}"
        )
    return lines


def memory_lines(memory: dict[str, Any]) -> list[str]:
    base = memory["student"]

    def line(label: str, key: str) -> str:
        return f"  {label:44s} {mib(memory[key]):>7s} MiB  (+{mib(memory[key] - base)} MiB, {memory[key] - base} bytes)"

    return [
        "reference weight memory (unique storage bytes of the student's parameters and buffers):",
        f"  {'student (bf16 base + fp32 LoRA)':44s} {mib(base):>7s} MiB",
        line("ours, inside student.reference()", "inside_reference"),
        line("ours, after ReferencePolicy", "after_reference"),
        line("seed's reference: copy.deepcopy(model)", "with_deepcopy") + f", RSS +{mib(memory['deepcopy_rss_added'])}",
        line("ours, snapshot adapter (update_ref_every>0)", "with_snapshot_adapter"),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--group", type=int, default=8, help="completions in the group (G)")
    parser.add_argument("--repeats", type=int, default=5, help="timed steps after one warm-up")
    parser.add_argument("--dtype", choices=["bfloat16", "float32"], default="bfloat16")
    parser.add_argument("--max-completion-tokens", type=int, default=256)
    parser.add_argument("--question", type=int, default=2, help="index in the GSM8K test split")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--loss-type",
        choices=LOSS_TYPES,
        default=load_config().training.grpo.loss_type,
        help="grpo.loss_type for both sides (default: training.yaml's)",
    )
    parser.add_argument(
        "--dataset-path",
        default=None,
        help="local GSM8K: a directory holding test.jsonl, or a pattern with {split} "
        "(default: training.yaml's dataset.path, else $GSM8K_PATH, else the hub)",
    )
    parser.add_argument("--lora-dropout", type=float, help="override models.yaml's LoRA dropout (0: deterministic)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1: stable timings on a shared CPU)")
    parser.add_argument("--variant", choices=VARIANTS, help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.variant:
        run_variant(args)
        return
    argv = sys.argv[1:]
    memory = spawn("memory", argv)
    runs = {name: spawn(name, argv) for name in ("ours", "trl", "trl+old")}
    dropout = load_config().models.lora.dropout if args.lora_dropout is None else args.lora_dropout
    report = [
        *step_table(args, runs),
        *loss_lines(runs, args.dtype, dropout),
        *check_lines(runs),
        *memory_lines(memory),
    ]
    print("\n".join(report))


if __name__ == "__main__":
    main()
