"""bench/gpu_train_check.py on a CPU: its arguments, its exit status without CUDA, its teacher, and the dry run.

The check itself needs a GPU and vLLM. Its `--device cpu` dry run replaces vLLM by a transformers
stand-in and runs everything else (the search with the student's proposals through
`VLLMSampledStudent`, one GRPO step with the Trainer, save, reload into a fresh student and the
engine), so that the script cannot rot unnoticed between GPU runs.
"""

from __future__ import annotations

import asyncio
import importlib.util
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from alphazero_llm.data import Problem
from alphazero_llm.mcts import Partial
from alphazero_llm.models.prompts import proposal_messages
from alphazero_llm.models.sampling import Sampling

SCRIPT = Path(__file__).resolve().parents[1] / "bench" / "gpu_train_check.py"


@pytest.fixture(scope="module")
def check() -> ModuleType:
    spec = importlib.util.spec_from_file_location("gpu_train_check", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up by name
    spec.loader.exec_module(module)
    yield module
    del sys.modules[spec.name]


def test_help_runs_without_vllm_or_cuda():
    result = subprocess.run([sys.executable, str(SCRIPT), "--help"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    for flag in ("--model", "--iterations", "--quick", "--device", "--logprobs", "--gpu-memory-utilization"):
        assert flag in result.stdout


def test_defaults_quick_and_the_cpu_model(check: ModuleType):
    args = check.parse_args([])
    assert (args.model, args.device, args.iterations, args.step_tokens, args.probes) == (
        check.DEFAULT_MODEL, "cuda", 8, 32, 8
    )  # fmt: skip
    assert args.enforce_eager and args.logprobs == "student"
    quick = check.parse_args(["--quick", "--device", "cpu"])
    assert (quick.model, quick.iterations, quick.step_tokens, quick.probes) == ("embedded", 4, 24, 4)
    assert check.parse_args(["--quick", "--iterations", "6"]).iterations == 6  # an explicit flag wins


@pytest.mark.parametrize("argv", [["--iterations", "0"], ["--gpu-memory-utilization", "1.5"]])
def test_bad_arguments_are_refused(check: ModuleType, argv: list[str]):
    with pytest.raises(SystemExit) as info:
        check.parse_args(argv)
    assert info.value.code == 2


def test_no_cuda_exits_2_before_loading_anything(check: ModuleType, monkeypatch: pytest.MonkeyPatch, capsys):
    monkeypatch.setattr(check.torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(check, "run", lambda args: pytest.fail("ran without CUDA"))
    assert check.main([]) == 2
    assert "CUDA is not available" in capsys.readouterr().err


def test_search_budget_comes_from_the_flags(check: ModuleType):
    from alphazero_llm.config import load_config

    mcts = check.search_config(load_config(), check.parse_args(["--iterations", "5", "--step-tokens", "16"]))
    assert (mcts.num_iterations, mcts.tokens_per_expansion, mcts.selection, mcts.rollout) == (5, 16, "puct", False)
    assert (mcts.num_right, mcts.num_wrong, mcts.num_student) == (2, 1, 2)


class ScriptedEngine:
    def __init__(self, texts: list[str]) -> None:
        self.texts = texts
        self.calls: list[tuple[Any, Sampling, dict[str, Any]]] = []

    def generate(self, prompts, sampling, **kwargs):
        self.calls.append((prompts, sampling, kwargs))
        return [self.texts[: kwargs["n"]]]


class CharTokenizer:
    def __call__(self, text: str, add_special_tokens: bool = True) -> dict[str, list[int]]:
        return {"input_ids": [ord(c) for c in text]}


def test_engine_teacher_asks_the_teachers_prompt_and_cuts_one_step(check: ModuleType):
    engine = ScriptedEngine(["Step 1: 2 * 48 = 96\nmore", "---", "48 + 96 = 144"])
    teacher = check.EngineTeacher(engine, CharTokenizer(), max_new_tokens=20, temperature=0.8, seed=10)
    problem = Problem(question="Q?", gold="1", solution="#### 1", id="q")
    steps = asyncio.run(teacher.propose(problem, Partial("so far", (1, 2)), "wrong", 3))
    assert [(s.text, s.producer) for s in steps] == [("2 * 48 = 96", "self-teacher"), ("48 + 96 = 144", "self-teacher")]
    assert all(s.source == "teacher" and s.token_ids is None for s in steps)  # text: the search tokenises it
    ((prompts, sampling, kwargs),) = engine.calls
    assert prompts == [proposal_messages("Q?", "so far", "wrong")]
    assert sampling == Sampling(max_new_tokens=20, temperature=0.8, top_p=1.0)  # as the teacher client: no top_p
    assert kwargs == {"n": 3, "seed": 11}
    assert teacher.tokens_used() == sum(len(t) for t in engine.texts)
    asyncio.run(teacher.propose(problem, Partial(""), "right", 1))
    assert engine.calls[-1][2]["seed"] == 12  # a new seed per call


@pytest.mark.slow
def test_cpu_dry_run_passes_every_check(smollm_dir):
    # The smallest budget that still searches, trains, saves and reloads: ~1-2 min on a 2-core CPU.
    argv = ["--device", "cpu", "--iterations", "2", "--step-tokens", "8", "--probes", "2"]
    result = subprocess.run(
        [sys.executable, str(SCRIPT), *argv], capture_output=True, text=True, timeout=900, cwd=SCRIPT.parents[1]
    )
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    assert "all checks passed" in result.stdout
    for phase in ("search", "grpo step", "reload fresh student", "engine set_adapter"):
        assert f"[gpu_train_check] {phase}:" in result.stdout
