"""GPU check of one training example: MCTS with vLLM proposals, one GRPO step, the new adapter back into vLLM.

    bash bench/gpu_train_check.sh [--model ID_OR_DIR] [--iterations 8] [--quick]   # installs vLLM if needed, 480 s cap
    python bench/gpu_train_check.py --device cpu --quick                           # CPU dry run, no vLLM (below)
    python bench/gpu_train_check.py --help

One process, one GPU, in this order:

1. Load: the student by `StudentModel.load(StudentSpec(name=--model, device="cuda"), config.models)`
   (nf4 4-bit, LoRA r=32 from models.yaml); its fresh adapter saved, `VLLMEngine` started beside it
   (bf16 base + LoRA, `--gpu-memory-utilization` of the GPU) and pointed at that adapter.
2. Search: one tree search (PUCT, `--iterations`) on a GSM8K-style `Problem` written for this check,
   with a reference solution for PRE, by the run's own assembly: `assembly.student_policy` over
   `VLLMSampledStudent(student, engine, logprobs=--logprobs)` and an `MCTSSource` (`sources.search_parts`
   inside), as `train_vllm.py` wires it. The parts:
   - student: the policy's steps are sampled by vLLM with the engine's adapter; PRE and the PUCT priors
     come from the transformers student (`--logprobs student`, the default: the nf4 policy the loss
     trains) or from vLLM (`--logprobs vllm`). The transformers student's `sample_ids` is wrapped to
     count calls: any call during the search fails the check.
   - teacher: the GPU box has no network, so the teachers are the student's own model on the same
     vLLM engine (`EngineTeacher`), asked with the teachers' prompts (`prompts.proposal_messages`,
     "right" and "wrong") and cut to one step by `prompts.cut_step`.
   - terminal check: rules only (`#### N` or `\\boxed{}`), no LLM.
   Checks: the search made trajectories, no proposer call failed, vLLM sampled student and teacher steps.
3. GRPO: a `Trainer` (training/loop.py) whose source hands back that search's `Group` takes one example
   (`train_example`: the group's token ids, reference log-probs, loss, backward, 8-bit AdamW step).
   Checks: loss and gradient norm finite, the optimiser stepped, the LoRA weights changed. The step uses
   `--learning-rate` (default 1e-4) without warm-up, so that one step moves the adapter visibly; the
   config's 1e-5 at the first warm-up step (x1/5) moves it too little to see through bf16.
4. Save and reload: `trainer.save()` writes a checkpoint (adapter, optimiser, RNG ...). A freshly loaded
   student takes it with `checkpoint.load_checkpoint` (sha256-verified): its LoRA weights must equal
   the trained ones exactly, and its log-probs on the probe pairs (the search's trajectories' token ids
   after the group's prompt ids) must match the trained student's. `engine.set_adapter(checkpoint/adapter)`
   must take a new adapter id and generate with it, and vLLM's log-probs on the probe pairs must move: when the
   transformers log-probs moved by at least 0.005 nats/token, vLLM's must move by a tenth of that at
   least (else vLLM still serves the old adapter); a smaller step is reported, not judged.
5. Report: seconds per phase, this process's allocator peak (student, training step, fresh student),
   device memory in use after each phase (vLLM's engine runs in a child process).

CPU dry run (`--device cpu`; the model defaults to `embedded`, SmolLM2-135M, bf16 LoRA): vLLM cannot run
on a CPU, so `TransformersEngine`, a second copy of the student that loads each adapter from disk on
`set_adapter`, stands in for `VLLMEngine`; everything else runs as on the GPU. It checks this script
and the library's wiring, not vLLM.

Exit status: 0 ok, 1 a check failed, 2 no CUDA, 3 vLLM missing, 4 the model could not be loaded.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.metadata
import importlib.util
import logging
import math
import random
import resource
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from alphazero_llm.config import Config, MCTSConfig, load_config, override
from alphazero_llm.data import Problem
from alphazero_llm.mcts import Partial, ProposedStep, SearchResult
from alphazero_llm.models.embedded import EmbeddedModelMissing
from alphazero_llm.models.policy import StudentPolicy
from alphazero_llm.models.prompts import cut_step, proposal_messages
from alphazero_llm.models.sampling import Sampling
from alphazero_llm.models.student import Prompt, StudentModel, StudentSpec
from alphazero_llm.models.terminal import TerminalChecker
from alphazero_llm.models.vllm_engine import VLLMSampledStudent
from alphazero_llm.training.assembly import SEED_STRIDE, example_seed, student_policy
from alphazero_llm.training.checkpoint import ADAPTER_DIR, load_checkpoint
from alphazero_llm.training.loop import Trainer
from alphazero_llm.training.sources import MCTSSource
from alphazero_llm.trajectory import Group

DEFAULT_MODEL = "meta-llama/Llama-3.2-3B-Instruct"
CPU_MODEL = "embedded"

# A GSM8K-style problem written for this check (not taken from the data set), in GSM8K's format.
QUESTION = (
    "A bakery sells muffins for $3 each. On Monday it sold 48 muffins and on Tuesday twice as many. "
    "How much money did it make on the two days?"
)
SOLUTION = (
    "On Tuesday the bakery sold 2 * 48 = 96 muffins.\n"
    "Over the two days it sold 48 + 96 = 144 muffins.\n"
    "At $3 each it made 144 * 3 = 432 dollars.\n"
    "#### 432"
)
GOLD = "432"
PROBLEM = Problem(question=QUESTION, gold=GOLD, solution=SOLUTION, id="gpu-train-check")

# Below this mean move of the transformers log-probs (nats/token) the step is too small to require
# vLLM to show it: vLLM adds the LoRA output to bf16 activations, which can round a tiny one away.
VISIBLE_MOVE = 0.005
RELOAD_TOLERANCE = 1e-3  # fresh student vs trained student, mean |log-prob difference|


# --- arguments -----------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="One MCTS search whose student proposals come from vLLM, one GRPO step with the Trainer, "
        "and the saved adapter reloaded into a fresh student and into vLLM; timings and peak memory.",
    )
    parser.add_argument(
        "--model",
        default=None,
        help=f"hub id or local checkpoint directory (default {DEFAULT_MODEL}; {CPU_MODEL!r} with --device cpu). "
        "The GPU box may be offline: pass a directory",
    )
    parser.add_argument("--device", choices=("cuda", "cpu"), default="cuda", help="cpu: the dry run (no vLLM)")
    parser.add_argument("--iterations", type=int, default=None, help="MCTS simulations (default 8, quick 4)")
    parser.add_argument("--quick", action="store_true", help="4 simulations, fewer and shorter steps, 4 probes")
    parser.add_argument("--step-tokens", type=int, default=None, help="tokens per step (default 32, quick 24)")
    parser.add_argument("--probes", type=int, default=None, help="trajectories whose log-probs are compared (8/4)")
    parser.add_argument(
        "--logprobs",
        choices=("student", "vllm"),
        default="student",
        help="who scores PRE and PUCT priors in the search: the transformers student (default) or vLLM",
    )
    parser.add_argument("--learning-rate", type=float, default=1e-4, help="of the one step, without warm-up")
    parser.add_argument(
        "--gpu-memory-utilization", type=float, default=0.3, help="vLLM's share of the GPU (default 0.3)"
    )
    parser.add_argument(
        "--enforce-eager",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="vLLM without CUDA graphs (default: on, it starts faster; this check measures wiring, not speed)",
    )
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    quick = args.quick
    for name, (full, short) in {"iterations": (8, 4), "step_tokens": (32, 24), "probes": (8, 4)}.items():
        if getattr(args, name) is None:
            setattr(args, name, short if quick else full)
    if args.model is None:
        args.model = CPU_MODEL if args.device == "cpu" else DEFAULT_MODEL
    if min(args.iterations, args.step_tokens, args.probes) < 1:
        parser.error("--iterations, --step-tokens and --probes must be >= 1")
    if not 0 < args.gpu_memory_utilization < 1:
        parser.error("--gpu-memory-utilization must be in (0, 1)")
    return args


def search_config(config: Config, args: argparse.Namespace) -> MCTSConfig:
    """training.yaml's search with a budget that fits the check: PUCT, so that the priors are exercised too."""
    return override(
        config.training.mcts,
        {
            "num_iterations": args.iterations,
            "selection": "puct",
            "max_depth": 6,
            "tokens_per_expansion": args.step_tokens,
            "num_right": 1 if args.quick else 2,
            "num_wrong": 1,
            "num_student": 2,
            "parallel_simulations": 1,
            "rollout": False,
        },
    )


def check_config(config: Config, args: argparse.Namespace, checkpoint_dir: Path) -> Config:
    """`config` with the check's search (`search_config`) and one GRPO example at `--learning-rate`, without
    warm-up (so that one step moves the adapter visibly), checkpointed to `checkpoint_dir`."""
    return override(
        config,
        {
            "training.seed": args.seed,
            "training.mcts": search_config(config, args),
            "training.optimizer.learning_rate": args.learning_rate,
            "training.optimizer.warmup_steps": 0,
            "training.optimizer.gradient_accumulation_steps": 1,
            "training.run.num_examples": 1,
            "training.run.checkpoint_dir": str(checkpoint_dir),
            "training.run.save_every": 1,
            "training.run.log_interval": 1,
            "training.run.loss": "grpo",
        },
    )


# --- the engine's stand-in on CPU, and the teacher on the engine --------------------------------


class TransformersEngine:
    """CPU stand-in for `VLLMEngine` (vLLM needs CUDA): a second student that serves each saved adapter.

    Like vLLM it reads the adapter from disk on `set_adapter`, so the dry run checks the save -> serve
    path too; a lock makes its calls take turns, as the engine's do.
    """

    def __init__(self, name: str, config: Config) -> None:
        self.model = StudentModel.load(StudentSpec(name=name, device="cpu"), config.models)
        self.encoder = self.model
        self.adapter_id = 0
        self._lock = threading.Lock()

    def set_adapter(self, directory: Path) -> None:
        with self._lock:
            self.model.load_adapter(Path(directory))
            self.adapter_id += 1

    def generate(self, prompts: Sequence[Prompt], sampling: Sampling, **kwargs: Any) -> list[list[str]]:
        with self._lock:
            return self.model.generate(prompts, sampling, **kwargs)

    def generate_ids(self, prompt_ids: Sequence[Sequence[int]], sampling: Sampling, **kwargs: Any) -> list[list[str]]:
        with self._lock:
            return self.model.generate_ids(prompt_ids, sampling, **kwargs)

    def sample_ids(
        self, prompt_ids: Sequence[Sequence[int]], sampling: Sampling, **kwargs: Any
    ) -> list[list[list[int]]]:
        with self._lock:
            return self.model.sample_ids(prompt_ids, sampling, **kwargs)

    @torch.no_grad()
    def token_logprobs(
        self, prompt_ids: Sequence[Sequence[int]], completion_ids: Sequence[Sequence[int]], *, temperature: float = 1.0
    ) -> list[torch.Tensor]:
        with self._lock:
            return self.model.token_logprobs(prompt_ids, completion_ids, temperature=temperature)

    def completion_logprobs(
        self, prompts: Sequence[Prompt], completions: Sequence[str], *, temperature: float = 1.0
    ) -> list[torch.Tensor]:
        with self._lock:
            return self.model.completion_logprobs(prompts, completions, temperature=temperature)


class EngineTeacher:
    """The teachers' `Proposer` on the serving engine: the student's own model, asked the teachers' prompts."""

    name = "teachers"  # the search and the Trainer's metrics count calls under this name
    producer = "self-teacher"

    def __init__(self, engine: Any, tokenizer: Any, max_new_tokens: int, temperature: float, seed: int) -> None:
        self.engine = engine
        self.tokenizer = tokenizer
        self.sampling = Sampling(max_new_tokens, temperature, top_p=1.0)  # as the teacher client asks: no top_p
        self._seed = seed
        self._tokens = 0
        self.calls = 0

    async def propose(self, problem: Problem, partial: Partial, direction: str, n: int) -> list[ProposedStep]:
        messages = proposal_messages(problem.question, partial.text, direction)  # type: ignore[arg-type]
        self._seed += 1
        self.calls += 1
        (texts,) = await asyncio.to_thread(self.engine.generate, [messages], self.sampling, n=n, seed=self._seed)
        self._tokens += sum(len(self.tokenizer(t, add_special_tokens=False)["input_ids"]) for t in texts)
        steps = [cut_step(t) for t in texts]
        return [ProposedStep(s, self.producer, (self.producer,)) for s in steps if s]

    def tokens_used(self) -> int:
        return self._tokens


class CountedSampling:
    """Wraps the transformers student's `sample_ids` to count calls (the search must sample with vLLM)."""

    def __init__(self, sample_ids: Callable[..., list[list[list[int]]]]) -> None:
        self.sample_ids = sample_ids
        self.calls = 0

    def __call__(self, *args: Any, **kwargs: Any) -> list[list[list[int]]]:
        self.calls += 1
        return self.sample_ids(*args, **kwargs)


# --- measuring -----------------------------------------------------------------------------------


@dataclass
class Report:
    """Seconds per phase, memory after each, and the checks that failed."""

    device: torch.device
    seconds: dict[str, float] = field(default_factory=dict)
    memory: list[tuple[str, float]] = field(default_factory=list)  # (phase, GiB in use on the device)
    failures: list[str] = field(default_factory=list)

    @contextmanager
    def phase(self, name: str) -> Iterator[None]:
        self._sync()
        start = time.perf_counter()
        print(f"[gpu_train_check] {name} ...", flush=True)
        yield
        self._sync()
        self.seconds[name] = time.perf_counter() - start
        print(f"[gpu_train_check] {name}: {self.seconds[name]:.1f} s", flush=True)
        self._note_memory(name)

    def check(self, ok: bool, failure: str) -> None:
        if not ok:
            self.failures.append(failure)
            print(f"[check] FAIL: {failure}", flush=True)

    def _sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize()

    def _note_memory(self, phase: str) -> None:
        if self.device.type != "cuda":
            return
        free, total = torch.cuda.mem_get_info()
        self.memory.append((phase, (total - free) / 2**30))
        print(f"[memory] after {phase}: {(total - free) / 2**30:.1f} GiB in use on the device", flush=True)

    def summary(self) -> str:
        lines = [f"{'phase':<22} {'seconds':>8}"]
        lines += [f"{name:<22} {seconds:>8.1f}" for name, seconds in self.seconds.items()]
        if self.device.type == "cuda":
            lines.append(f"peak allocated by this process: {torch.cuda.max_memory_allocated() / 2**30:.1f} GiB")
            lines.append(f"peak device memory in use: {max(used for _, used in self.memory):.1f} GiB")
        else:
            # ru_maxrss is in KiB on Linux.
            lines.append(f"peak resident memory: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20:.1f} GiB")
        return "\n".join(lines)


def lora_state(student: StudentModel) -> dict[str, torch.Tensor]:
    """The adapter's weights as PEFT saves them, copied to the CPU."""
    from peft import get_peft_model_state_dict

    return {k: v.detach().to("cpu", copy=True) for k, v in get_peft_model_state_dict(student.model).items()}


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.4g}"


def mean_abs_diff(a: Sequence[torch.Tensor], b: Sequence[torch.Tensor]) -> float:
    return (torch.cat(list(a)) - torch.cat(list(b))).abs().mean().item()


Probes = tuple[list[list[int]], list[list[int]]]  # (prompt ids, completion ids), pair by pair


def probe_pairs(group: Group, limit: int) -> Probes:
    """Up to `limit` of the group's trajectories as the loss sees them: its prompt ids, their completion ids."""
    completions = [list(t.completion_ids) for t in group.trajectories if t.text.strip()][:limit]
    return [list(group.prompt_ids)] * len(completions), completions


@torch.no_grad()
def score(model: Any, probes: Probes) -> list[torch.Tensor]:
    """`model.token_logprobs` of the probe pairs (temperature 1, as vLLM's), none when there are none."""
    return model.token_logprobs(*probes) if probes[1] else []


def versions() -> str:
    found = []
    for name in ("torch", "transformers", "peft", "bitsandbytes", "vllm"):
        try:
            found.append(f"{name} {importlib.metadata.version(name)}")
        except importlib.metadata.PackageNotFoundError:
            found.append(f"{name} -")
    return ", ".join(found)


# --- the check -----------------------------------------------------------------------------------


def load_student(args: argparse.Namespace, config: Config) -> StudentModel | None:
    try:
        return StudentModel.load(StudentSpec(name=args.model, device=args.device), config.models)
    except (OSError, EmbeddedModelMissing) as exc:
        print(
            f"gpu_train_check: could not load {args.model!r}: {exc}\n"
            "The GPU box may have no internet: pass --model /path/to/a/local/checkpoint.",
            file=sys.stderr,
        )
        return None


def start_engine(args: argparse.Namespace, config: Config, student: StudentModel) -> Any:
    if args.device == "cpu":
        return TransformersEngine(args.model, config)
    from alphazero_llm.models.vllm_engine import VLLMEngine

    return VLLMEngine(
        args.model,
        student,
        config.models,
        gpu_memory_utilization=args.gpu_memory_utilization,
        enforce_eager=args.enforce_eager,
        seed=args.seed,
    )


def run(args: argparse.Namespace) -> int:
    device = torch.device(args.device)
    report = Report(device)
    started = time.perf_counter()
    where = torch.cuda.get_device_name() if device.type == "cuda" else "CPU dry run (a transformers stand-in for vLLM)"
    print(f"[gpu_train_check] {where}; {versions()}", flush=True)

    with tempfile.TemporaryDirectory(prefix="gpu_train_check_") as tmp:
        work = Path(tmp)
        config = check_config(load_config(), args, work / "checkpoints")
        generation = config.models.generation
        with report.phase("load student"):
            student = load_student(args, config)
            if student is None:
                return 4
        with report.phase("start engine"):
            engine = start_engine(args, config, student)
            student.save_adapter(work / "initial_adapter")  # the fresh LoRA: vLLM samples the current policy
            engine.set_adapter(work / "initial_adapter")
        first_adapter = engine.adapter_id

        # --- the search, wired by the run's assembly ---
        counted = CountedSampling(student.sample_ids)  # `generate` and `generate_ids` go through `sample_ids`
        student.sample_ids = counted  # type: ignore[method-assign]
        mcts = config.training.mcts
        seed = example_seed(args.seed, 0)
        policy = student_policy(VLLMSampledStudent(student, engine, logprobs=args.logprobs), config, seed)
        teacher = EngineTeacher(
            engine,
            student.tokenizer,
            mcts.tokens_per_expansion,
            config.teachers.client.temperature,
            seed + SEED_STRIDE // 2,  # not the student's seeds: its "right" prompt is the same
        )
        terminal = TerminalChecker.rules_only(config.teachers.terminal_checker)
        loop = asyncio.new_event_loop()
        try:
            source = MCTSSource(loop, lambda step: policy, teacher, terminal, mcts, config.training.rewards)
            with report.phase("search"):
                group = source(PROBLEM, random.Random(args.seed), 0)
        finally:
            loop.close()
        assert source.last is not None
        check_search(report, source.last, policy, teacher, counted)

        # Probe pairs: trajectories as the loss scores them, after the group's prompt.
        probes = probe_pairs(group, args.probes)
        tf_before, engine_before = score(student, probes), score(engine, probes)

        # --- one GRPO step, on the searched group ---
        def searched(problem: Problem, rng: random.Random, step: int) -> Group:
            assert problem == PROBLEM, "the Trainer asked for another problem"
            return group

        trainer = Trainer(student, searched, [PROBLEM], config.training)
        weights_before = lora_state(student)
        with report.phase("grpo step"):
            record = trainer.train_example()
        weights_after = lora_state(student)
        check_step(report, record, weights_before, weights_after)

        # --- save, reload into a fresh student and into the engine ---
        with report.phase("save checkpoint"):
            checkpoint = trainer.save()
        with report.phase("reload fresh student"):
            fresh = StudentModel.load(StudentSpec(name=args.model, device=args.device), config.models)
            load_checkpoint(checkpoint, fresh)
        tf_after = score(student, probes)
        check_reload(report, weights_after, lora_state(fresh), fresh, probes, tf_after)
        del fresh
        if device.type == "cuda":
            torch.cuda.empty_cache()
        with report.phase("engine set_adapter"):
            engine.set_adapter(checkpoint / ADAPTER_DIR)
            sampling = Sampling(args.step_tokens, generation.temperature, generation.top_p)
            samples = engine.generate([policy.chat(PROBLEM)], sampling, n=2, seed=args.seed)
            engine_after = score(engine, probes)
        check_engine(
            report, engine.adapter_id, first_adapter, samples, (tf_before, tf_after), (engine_before, engine_after)
        )

    print("\n" + report.summary())
    print(f"total wall time: {time.perf_counter() - started:.0f} s")
    for failure in report.failures:
        print(f"FAIL: {failure}", file=sys.stderr)
    print("gpu_train_check: " + ("FAILED" if report.failures else "all checks passed"), flush=True)
    return 1 if report.failures else 0


def check_search(
    report: Report, result: SearchResult, policy: StudentPolicy, teacher: EngineTeacher, counted: CountedSampling
) -> None:
    stats = result.stats
    producers = {p for node in result.root.iter_subtree() for p in node.producers}
    print(
        f"[search] {stats.nodes} nodes, depth {stats.max_depth}, {len(result.trajectories)} trajectories, "
        f"rewards {[round(t.reward, 3) for t in result.trajectories]}, calls {stats.proposer_calls}, "
        f"failures {stats.proposer_failures}, student tokens {policy.tokens_used()}, teacher tokens "
        f"{teacher.tokens_used()}, best answer {result.best.answer!r} (gold {GOLD})",
        flush=True,
    )
    print(f"[search] best path:\n{result.best_text}", flush=True)
    report.check(any(t.text.strip() for t in result.trajectories), "the search made no trajectory with text")
    report.check(not stats.proposer_failures, f"proposer calls failed: {stats.proposer_failures}")
    report.check(stats.proposer_calls.get("student/student", 0) > 0, "the student was never asked for a step")
    report.check(policy.tokens_used() > 0, "the engine sampled no student tokens")
    report.check(teacher.calls > 0 and teacher.tokens_used() > 0, "the engine sampled no teacher tokens")
    report.check("student" in producers, "no step of the tree was proposed by the student")
    report.check(counted.calls == 0, f"the transformers student sampled {counted.calls} times during the search")


def check_step(
    report: Report, record: dict[str, Any], before: dict[str, torch.Tensor], after: dict[str, torch.Tensor]
) -> None:
    changed = [k for k in before if not torch.equal(before[k], after[k])]
    largest = max((float((after[k].float() - before[k].float()).abs().max()) for k in before), default=0.0)
    print(
        f"[grpo] group {record['group_size']}, reward mean {_fmt(record['reward_mean'])}, loss {_fmt(record['loss'])}, "
        f"kl {_fmt(record['kl'])}, grad norm {_fmt(record['grad_norm'])}, updated {record['updated']}, "
        f"{len(changed)}/{len(before)} LoRA tensors changed (largest change {largest:.2e})",
        flush=True,
    )
    report.check(record["loss"] is not None and math.isfinite(record["loss"]), f"loss {record['loss']}")
    norm = record["grad_norm"]
    report.check(norm is not None and math.isfinite(norm) and norm > 0, f"gradient norm {norm}")
    report.check(bool(record["updated"]) and not record["skipped"], "the optimiser did not step")
    report.check(bool(changed), "no LoRA weight changed in the step")


def check_reload(
    report: Report,
    trained: dict[str, torch.Tensor],
    reloaded: dict[str, torch.Tensor],
    fresh: StudentModel,
    probes: Probes,
    tf_after: list[torch.Tensor],
) -> None:
    same_keys = trained.keys() == reloaded.keys()
    report.check(same_keys, "the reloaded adapter has other tensors than the trained one")
    if same_keys:
        differing = [k for k in trained if not torch.equal(trained[k], reloaded[k])]
        report.check(not differing, f"{len(differing)} reloaded LoRA tensors differ from the trained ones")
    if probes[1]:
        gap = mean_abs_diff(score(fresh, probes), tf_after)
        print(f"[reload] fresh student vs trained student: mean |log-prob difference| {gap:.2e}", flush=True)
        report.check(gap <= RELOAD_TOLERANCE, f"the reloaded student scores differently ({gap:.2e} nats/token)")


def check_engine(
    report: Report,
    adapter_id: int,
    first_adapter: int,
    samples: list[list[str]],
    tf: tuple[list[torch.Tensor], list[torch.Tensor]],
    engine: tuple[list[torch.Tensor], list[torch.Tensor]],
) -> None:
    report.check(adapter_id == first_adapter + 1, f"adapter id {adapter_id} after set_adapter, not {first_adapter + 1}")
    report.check(len(samples) == 1 and len(samples[0]) == 2, f"the engine returned {samples} for 1 prompt x n=2")
    print(f"[engine] a sample with the new adapter: {samples[0][0]!r}", flush=True)
    if not tf[0]:
        return
    tf_move, engine_move = mean_abs_diff(*tf), mean_abs_diff(*engine)
    gap_before, gap_after = mean_abs_diff(engine[0], tf[0]), mean_abs_diff(engine[1], tf[1])
    print(
        f"[engine] the step moved log-probs by {tf_move:.2e} nats/token in transformers, {engine_move:.2e} in the "
        f"engine; engine vs transformers {gap_before:.2e} before, {gap_after:.2e} after",
        flush=True,
    )
    if tf_move >= VISIBLE_MOVE:
        report.check(
            engine_move >= 0.1 * tf_move,
            f"the engine's log-probs barely moved ({engine_move:.2e} vs {tf_move:.2e}): it serves the old adapter",
        )
    else:
        print(
            f"[engine] the step moved transformers' log-probs by less than {VISIBLE_MOVE}: not judged "
            "(the adapter id check stands)",
            flush=True,
        )


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.device == "cuda":
        if not torch.cuda.is_available():
            print(
                "gpu_train_check: CUDA is not available. This check needs one NVIDIA GPU (e.g. an H100) and a "
                "CUDA build of torch; nothing was run (--device cpu runs the dry run).",
                file=sys.stderr,
            )
            return 2
        if importlib.util.find_spec("vllm") is None:
            print(
                "gpu_train_check: vLLM is not installed. Run bench/gpu_train_check.sh (it installs it), or "
                "pip install -e '.[vllm]'.",
                file=sys.stderr,
            )
            return 3
    return run(args)


if __name__ == "__main__":  # vLLM starts its engine with spawn once CUDA is initialised: keep this guard
    sys.exit(main())
