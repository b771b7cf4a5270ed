"""train_vllm.py's `--engine`: the choice of sampler, and a search whose student steps come from vLLM.

No CUDA: the engine runs on the fake `vllm` of `alphazero_llm.testing.fake_vllm` (conftest's
`fake_vllm` fixture), and the student is a fake with the StudentModel methods the search uses.
What only a GPU can show (real vLLM sampling with the trained LoRA) is bench/gpu_train_check.py's.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import random
import sys
import types
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch

from alphazero_llm.config import Config, load_config, override
from alphazero_llm.data import Problem
from alphazero_llm.mcts import Partial, ProposedStep
from alphazero_llm.models.terminal import TerminalChecker
from alphazero_llm.models.vllm_engine import VLLMEngine
from alphazero_llm.testing.fake_vllm import FakeEncoder, fake_token_ids, write_fake_adapter
from alphazero_llm.training.assembly import policy_factory
from alphazero_llm.training.cli import build_parser, main
from alphazero_llm.training.engine import (
    VLLM_ADAPTER_DIR,
    EngineChoice,
    VLLMAdapterSync,
    choose_engine,
    start_engine,
    vllm_installed,
)
from alphazero_llm.training.settings import RunSettings, settle
from alphazero_llm.training.sources import MCTSSource

CONFIG = load_config()
PROBLEM = Problem("Tom has 3 apples and buys 2 more. How many apples does he have?", "5", "3 + 2 = 5\n#### 5", "q0")


def settings_for(argv: list[str], device: str, has_vllm: bool) -> RunSettings:
    return settle(build_parser(CONFIG).parse_args(argv), CONFIG, device, env={}, has_vllm=has_vllm)


# --- the choice ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("argv", "device", "has_vllm", "engine", "reason"),
    [
        ([], "cuda", True, "vllm", "CUDA and vLLM are available"),
        ([], "cuda", False, "transformers", "pip install -e '.[vllm]'"),
        ([], "cpu", True, "transformers", "vLLM needs CUDA"),
        ([], "cpu", False, "transformers", "vLLM needs CUDA"),
        (["--engine", "auto"], "cuda", True, "vllm", "--engine auto"),
        (["--engine", "transformers"], "cuda", True, "transformers", "--engine transformers"),
        (["--engine", "transformers"], "cpu", False, "transformers", "--engine transformers"),
        (["--engine", "vllm"], "cuda", True, "vllm", "--engine vllm"),
    ],
)
def test_engine_choice(argv: list[str], device: str, has_vllm: bool, engine: str, reason: str):
    choice = settings_for(argv, device, has_vllm).engine
    assert choice.name == engine
    assert reason in choice.reason


@pytest.mark.parametrize(
    ("device", "has_vllm", "message"),
    [
        ("cpu", True, r"needs a CUDA GPU, but the device is cpu: use --engine transformers"),
        ("cpu", False, r"needs a CUDA GPU"),
        ("cuda", False, r"vLLM is not installed; install it with pip install -e '\.\[vllm\]'"),
    ],
)
def test_engine_vllm_that_cannot_run_is_an_error_naming_the_fix(device: str, has_vllm: bool, message: str):
    with pytest.raises(ValueError, match=message):
        settings_for(["--engine", "vllm"], device, has_vllm)


def test_engine_vllm_on_cpu_is_a_usage_error_from_the_command_line(capsys: pytest.CaptureFixture[str]):
    assert main(["--engine", "vllm", "--device", "cpu"]) == 2
    assert "--engine vllm needs a CUDA GPU" in capsys.readouterr().err


def test_an_unknown_engine_is_refused():
    with pytest.raises(ValueError, match="auto, transformers, vllm"):
        choose_engine("sglang", "cuda", True)
    with pytest.raises(SystemExit):
        build_parser(CONFIG).parse_args(["--engine", "sglang"])


def test_vllm_installed_looks_without_importing(monkeypatch: pytest.MonkeyPatch, fake_vllm: types.ModuleType):
    assert vllm_installed()  # the fake, in sys.modules without a spec
    monkeypatch.setitem(sys.modules, "vllm", None)  # what `import vllm` refuses
    assert not vllm_installed()


# --- the engine beside the student ---------------------------------------------------------------


class FakeStudent(FakeEncoder):
    """The StudentModel methods a search with vLLM uses; generating here would mean vLLM was bypassed."""

    def __init__(self, generates: bool = False) -> None:
        super().__init__()
        self.generates = generates
        self.generated = 0
        self.scored = 0
        self.saved: list[Path] = []

    def sample_ids(self, prompt_ids, sampling, *, n: int = 1, **kwargs: Any) -> list[list[list[int]]]:
        if not self.generates:
            raise AssertionError("the transformers student generated; vLLM should have")
        self.generated += 1
        return [[fake_token_ids(f"student sample {j}") for j in range(n)] for _ in prompt_ids]

    def generate_ids(self, *args: Any, **kwargs: Any) -> list[list[str]]:
        raise AssertionError("the search samples token ids (sample_ids), never texts")

    generate = generate_ids  # the templated-prompt entry point must not be used either

    def token_logprobs(self, prompt_ids, completion_ids, temperature: float = 1.0) -> list[torch.Tensor]:
        self.scored += 1
        return [torch.full((len(c),), -1.0) for c in completion_ids]

    def completion_logprobs(self, prompts, completions, temperature: float = 1.0) -> list[torch.Tensor]:
        ids = [self.tokenizer(c, add_special_tokens=False)["input_ids"] for c in completions]
        return self.token_logprobs([self.prompt_ids(p) for p in prompts], ids)

    def save_adapter(self, directory: Path) -> None:
        write_fake_adapter(directory)
        self.saved.append(directory)


def test_start_engine_uses_the_models_yaml_settings(fake_vllm, caplog: pytest.LogCaptureFixture):
    student = FakeStudent()
    with caplog.at_level(logging.INFO, logger="alphazero_llm.training.engine"):
        engine = start_engine(EngineChoice("vllm", "--engine vllm"), "org/student", student, CONFIG.models, seed=9)
    assert isinstance(engine, VLLMEngine) and engine.encoder is student
    vllm_cfg = CONFIG.models.vllm
    kwargs = engine.llm.kwargs
    assert (kwargs["model"], kwargs["seed"], kwargs["max_model_len"]) == (
        "org/student",
        9,
        CONFIG.models.student.max_seq_len,
    )
    assert (kwargs["gpu_memory_utilization"], kwargs["enforce_eager"]) == (
        vllm_cfg.gpu_memory_utilization,
        vllm_cfg.enforce_eager,
    )
    assert kwargs.get("quantization") == vllm_cfg.quantization
    assert "student steps sampled by vllm (--engine vllm)" in caplog.text


def test_start_engine_with_transformers_starts_nothing(caplog: pytest.LogCaptureFixture):
    choice = EngineChoice("transformers", "--engine auto on cpu: vLLM needs CUDA")
    with caplog.at_level(logging.INFO, logger="alphazero_llm.training.engine"):
        assert start_engine(choice, "org/student", FakeStudent(), CONFIG.models, seed=0) is None
    assert "sampled by transformers (--engine auto on cpu: vLLM needs CUDA)" in caplog.text


# --- a search through the engine -----------------------------------------------------------------


class ScriptedTeacher:
    name = "teachers"

    async def propose(self, problem: Problem, partial: Partial, direction: str, n: int) -> list[ProposedStep]:
        text = "3 + 2 = 5\n#### 5" if direction == "right" else "3 - 2 = 1\n#### 1"
        return [ProposedStep(text, "scripted", ("scripted",))][:n]

    def tokens_used(self) -> int:
        return 0


def small_search() -> Config:
    changes = {
        "mcts.num_iterations": 2, "mcts.selection": "puct", "mcts.max_depth": 2, "mcts.tokens_per_expansion": 8,
        "mcts.num_right": 1, "mcts.num_wrong": 1, "mcts.num_student": 2, "mcts.parallel_simulations": 1,
        "mcts.rollout": False, "seed": 1,
    }  # fmt: skip
    return dataclasses.replace(CONFIG, training=override(CONFIG.training, changes))


@pytest.fixture
def event_loop_for_runner() -> Iterator[asyncio.AbstractEventLoop]:
    loop = asyncio.new_event_loop()
    yield loop
    loop.close()


def make_runner(loop: asyncio.AbstractEventLoop, student: FakeStudent, sync: VLLMAdapterSync | None) -> MCTSSource:
    """The run's source (`assembly.policy_factory`) with a scripted teacher."""
    config = small_search()
    terminal = TerminalChecker.rules_only(config.teachers.terminal_checker)
    mcts, rewards = config.training.mcts, config.training.rewards
    return MCTSSource(loop, policy_factory(student, config, sync), ScriptedTeacher(), terminal, mcts, rewards)


def student_steps(runner: MCTSSource) -> list[str]:
    return [n.step for n in runner.last.root.iter_subtree() if "student" in n.producers]


def test_search_samples_through_vllm_and_resyncs_the_adapter_after_an_update(
    fake_vllm, event_loop_for_runner: asyncio.AbstractEventLoop, tmp_path: Path
):
    student = FakeStudent()
    engine = VLLMEngine("org/student", student, CONFIG.models)
    sync = VLLMAdapterSync(student, engine, tmp_path / VLLM_ADAPTER_DIR)
    updates = [0]
    sync.version = lambda: updates[0]
    runner = make_runner(event_loop_for_runner, student, sync)

    # First search: the current adapter is saved and served before any sampling.
    runner(PROBLEM, random.Random(0), 0)
    assert student.saved == [tmp_path / VLLM_ADAPTER_DIR] and engine.adapter_id == 1
    assert engine.adapter_path == (tmp_path / VLLM_ADAPTER_DIR).resolve()
    calls = list(engine.llm.calls)
    assert calls and {c["lora_request"].lora_int_id for c in calls} == {1}
    assert student_steps(runner) and all(s.startswith("prompt0-sample") for s in student_steps(runner))
    assert student.scored > 0  # PRE and PUCT priors: the transformers student's log-probs
    assert all(c["params"][0].prompt_logprobs is None for c in calls)  # vLLM only sampled

    # No update since: nothing is saved or reloaded.
    seen = len(engine.llm.calls)
    runner(PROBLEM, random.Random(1), 1)
    assert len(student.saved) == 1 and engine.adapter_id == 1
    assert {c["lora_request"].lora_int_id for c in engine.llm.calls[seen:]} == {1}

    # An optimiser step: the next search serves the new adapter under a new id.
    updates[0] = 1
    seen = len(engine.llm.calls)
    runner(PROBLEM, random.Random(2), 2)
    assert len(student.saved) == 2 and engine.adapter_id == 2
    assert {c["lora_request"].lora_int_id for c in engine.llm.calls[seen:]} == {2}


def test_search_without_an_engine_samples_with_the_student(event_loop_for_runner: asyncio.AbstractEventLoop):
    student = FakeStudent(generates=True)
    runner = make_runner(event_loop_for_runner, student, None)
    runner(PROBLEM, random.Random(0), 0)
    assert student.generated > 0 and student.saved == []
    assert student_steps(runner) and all(s.startswith("student sample") for s in student_steps(runner))


def test_sync_follows_the_trainers_update_count_from_the_first_call(tmp_path: Path):
    saved: list[Path] = []

    class Server:
        def __init__(self) -> None:
            self.loaded: list[Path] = []

        def set_adapter(self, directory: Path | str) -> None:
            self.loaded.append(Path(directory))

    class Saver:
        def save_adapter(self, directory: Path) -> None:
            saved.append(directory)

    server = Server()
    sync = VLLMAdapterSync(Saver(), server, tmp_path)
    count = [3]  # e.g. a resumed run whose trainer already stepped: still synced on the first call
    sync.version = lambda: count[0]
    assert sync.sync() and not sync.sync()
    count[0] = 4
    assert sync.sync() and not sync.sync()
    assert saved == server.loaded == [tmp_path, tmp_path]
