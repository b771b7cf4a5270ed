"""The optional vLLM engine, on a CPU without vLLM: lazy import, the install hint, and its bookkeeping.

vLLM's wheels are CUDA-only, so the engine's own logic (adapter ids, the LoRARequest it sends,
how `generate`'s arguments map to SamplingParams, which prompt log-probs it keeps) is tested
against the small hand-written fake `vllm` of `alphazero_llm.testing.fake_vllm`, put into
`sys.modules` by conftest's `fake_vllm` fixture. The fake records what the engine asks for and
answers in vLLM's output shapes; it checks this module's logic, not vLLM. The real engine is
exercised on a GPU by bench/gpu_check.py.
"""

from __future__ import annotations

import asyncio
import dataclasses
import subprocess
import sys
import time
import types
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import torch

from alphazero_llm.config import ModelsConfig, load_config
from alphazero_llm.mcts.proposers import StudentAdapter
from alphazero_llm.models.vllm_engine import VLLMEngine, VLLMSampledStudent, VLLMUnavailableError, vllm_lora_rank
from alphazero_llm.testing.fake_vllm import (
    FakeEncoder,
    FakeLLM,
    FakeLoRARequest,
    FakeSamplingParams,
    fake_logprob,
    write_fake_adapter,
)


@pytest.fixture(scope="module")
def models_config() -> ModelsConfig:
    return load_config().models


@pytest.fixture
def engine(fake_vllm: types.ModuleType, models_config: ModelsConfig) -> VLLMEngine:
    return VLLMEngine("org/student", FakeEncoder(), models_config, seed=7)


def last_call(engine: VLLMEngine) -> dict[str, Any]:
    return engine.llm.calls[-1]


# --- without vllm --------------------------------------------------------------------------------

BLOCK_AND_IMPORT = """
import sys

class RefuseVLLM:
    tried = []
    def find_spec(self, name, path=None, target=None):
        if name == "vllm" or name.startswith("vllm."):
            self.tried.append(name)
            raise ModuleNotFoundError(f"No module named {name!r}")
        return None

sys.meta_path.insert(0, RefuseVLLM())
import alphazero_llm.models.vllm_engine
assert not RefuseVLLM.tried, RefuseVLLM.tried
assert not any(m == "vllm" or m.startswith("vllm.") for m in sys.modules)
"""


def test_module_imports_without_vllm_and_does_not_import_it():
    # A fresh interpreter: another test (or a GPU box with vLLM installed) may have imported it here.
    result = subprocess.run([sys.executable, "-c", BLOCK_AND_IMPORT], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]


def test_building_an_engine_without_vllm_says_how_to_install_it(
    monkeypatch: pytest.MonkeyPatch, models_config: ModelsConfig
):
    monkeypatch.setitem(sys.modules, "vllm", None)  # makes `import vllm` raise ImportError
    with pytest.raises(VLLMUnavailableError, match=r"pip install 'alphazero-llm-trainer\[vllm\]'") as info:
        VLLMEngine("org/student", FakeEncoder(), models_config)
    assert isinstance(info.value, ImportError)
    assert "CUDA" in str(info.value)


# --- construction --------------------------------------------------------------------------------


def test_engine_arguments_come_from_the_config(engine: VLLMEngine, models_config: ModelsConfig):
    assert engine.llm.kwargs == {
        "model": "org/student",
        "dtype": "bfloat16",
        "gpu_memory_utilization": 0.35,
        "max_model_len": models_config.student.max_seq_len,
        "seed": 7,
        "enable_lora": True,
        "max_lora_rank": models_config.lora.r,  # 32 is a rank vLLM accepts as it is
        "max_loras": 1,
        "trust_remote_code": False,
        "enforce_eager": False,
    }


def test_options_and_extra_engine_arguments_are_passed_on(fake_vllm, models_config: ModelsConfig):
    engine = VLLMEngine(
        "org/student",
        FakeEncoder(),
        models_config,
        gpu_memory_utilization=0.5,
        quantization="bitsandbytes",
        enforce_eager=True,
        llm_kwargs={"enable_prefix_caching": False},
    )
    kwargs = engine.llm.kwargs
    assert (kwargs["gpu_memory_utilization"], kwargs["quantization"], kwargs["enforce_eager"]) == (
        0.5,
        "bitsandbytes",
        True,
    )
    assert kwargs["enable_prefix_caching"] is False


def test_engine_defaults_come_from_the_vllm_section(fake_vllm, models_config: ModelsConfig):
    vllm_cfg = dataclasses.replace(
        models_config.vllm, gpu_memory_utilization=0.6, enforce_eager=True, quantization="bitsandbytes"
    )
    config = dataclasses.replace(models_config, vllm=vllm_cfg)
    kwargs = VLLMEngine("org/student", FakeEncoder(), config).llm.kwargs
    assert (kwargs["gpu_memory_utilization"], kwargs["enforce_eager"], kwargs["quantization"]) == (
        0.6,
        True,
        "bitsandbytes",
    )
    explicit = VLLMEngine("org/student", FakeEncoder(), config, gpu_memory_utilization=0.2, enforce_eager=False)
    assert (explicit.llm.kwargs["gpu_memory_utilization"], explicit.llm.kwargs["enforce_eager"]) == (0.2, False)


def test_lora_rank_is_rounded_up_to_one_vllm_accepts(fake_vllm, models_config: ModelsConfig):
    config = dataclasses.replace(models_config, lora=dataclasses.replace(models_config.lora, r=20))
    assert VLLMEngine("org/student", FakeEncoder(), config).llm.kwargs["max_lora_rank"] == 32
    assert [vllm_lora_rank(r) for r in (1, 2, 8, 9, 64, 65, 512)] == [1, 8, 8, 16, 64, 128, 512]
    with pytest.raises(ValueError, match="513"):
        vllm_lora_rank(513)


# --- adapters ------------------------------------------------------------------------------------


def test_each_set_adapter_takes_a_new_id_and_generate_sends_the_latest(engine: VLLMEngine, tmp_path: Path):
    first, second = write_fake_adapter(tmp_path / "step-1"), write_fake_adapter(tmp_path / "step-2")
    engine.generate(["hi"])
    assert last_call(engine)["lora_request"] is None  # no adapter yet: the base model
    assert engine.adapter_id == 0

    engine.set_adapter(first)
    engine.set_adapter(second)
    engine.generate(["hi"])
    assert last_call(engine)["lora_request"] == FakeLoRARequest("student-2", 2, str(second.resolve()))

    # Saving again into the same directory: a new id, so vLLM reads the new weights.
    engine.set_adapter(first)
    engine.completion_logprobs(["hi"], ["ok"])
    assert last_call(engine)["lora_request"] == FakeLoRARequest("student-3", 3, str(first.resolve()))
    assert (engine.adapter_id, engine.adapter_path) == (3, first.resolve())


def test_reference_disables_the_adapter_for_its_block_only(engine: VLLMEngine, tmp_path: Path):
    engine.set_adapter(write_fake_adapter(tmp_path / "adapter"))
    with engine.reference():
        engine.generate(["hi"])
        assert last_call(engine)["lora_request"] is None
    engine.generate(["hi"])
    assert last_call(engine)["lora_request"].lora_int_id == 1
    engine.clear_adapter()
    engine.generate(["hi"])
    assert last_call(engine)["lora_request"] is None


def test_set_adapter_refuses_a_directory_without_a_write_fake_adapter(engine: VLLMEngine, tmp_path: Path):
    (tmp_path / "adapter_config.json").write_text("{}")
    with pytest.raises(FileNotFoundError, match=r"adapter_model\.safetensors"):
        engine.set_adapter(tmp_path)
    assert engine.adapter_id == 0


# --- generate ------------------------------------------------------------------------------------


def test_generate_sends_the_encoders_token_ids_and_returns_n_per_prompt_in_order(engine: VLLMEngine):
    chat = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "2+2?"}]
    result = engine.generate([chat, "3+3?"], n=3, batch_size=1)
    encoder = FakeEncoder()
    assert last_call(engine)["prompts"] == [
        {"prompt_token_ids": encoder.prompt_ids(chat)},
        {"prompt_token_ids": encoder.prompt_ids("3+3?")},
    ]
    assert result == [[f"prompt{p}-sample{j}" for j in range(3)] for p in range(2)]


def test_sampling_arguments_map_to_sampling_params(engine: VLLMEngine):
    engine.generate(["q"], n=4, max_new_tokens=50, temperature=0.7, top_p=0.9, stop=["\n\n", "", "####"])
    assert last_call(engine)["params"] == FakeSamplingParams(
        n=4, temperature=0.7, top_p=0.9, max_tokens=50, stop=["\n\n", "####"], seed=None
    )


def test_temperature_zero_is_greedy_and_no_stop_is_none(engine: VLLMEngine):
    engine.generate(["q"], n=2, max_new_tokens=8, temperature=0.0, top_p=0.5, stop=[])
    assert last_call(engine)["params"] == FakeSamplingParams(n=2, temperature=0.0, top_p=1.0, max_tokens=8)


def test_a_seed_gives_every_prompt_its_own_seeds(engine: VLLMEngine):
    engine.generate(["a", "b", "c"], n=3, seed=10)
    assert [p.seed for p in last_call(engine)["params"]] == [10, 13, 16]  # vLLM adds j for sample j


@pytest.mark.parametrize(("n", "max_new_tokens"), [(0, 8), (1, 0)])
def test_generate_rejects_empty_requests(engine: VLLMEngine, n: int, max_new_tokens: int):
    with pytest.raises(ValueError, match=">= 1"):
        engine.generate(["q"], n=n, max_new_tokens=max_new_tokens)


def test_no_prompts_means_no_call(engine: VLLMEngine):
    assert engine.generate([]) == []
    assert engine.llm.calls == []


# --- log-probs -----------------------------------------------------------------------------------


def test_completion_logprobs_keep_the_completion_part_of_the_prompt_logprobs(engine: VLLMEngine):
    prompts = ["2+2?", [{"role": "user", "content": "say"}], "x"]
    completions = ["4", "", "yes"]
    result = engine.completion_logprobs(prompts, completions)

    call = last_call(engine)
    assert call["params"] == FakeSamplingParams(n=1, temperature=0.0, max_tokens=1, prompt_logprobs=1)
    encoder = FakeEncoder()
    # The empty completion is not sent; the others go as prompt + completion token ids.
    assert call["prompts"] == [
        {"prompt_token_ids": [*encoder.prompt_ids("2+2?"), ord("4")]},
        {"prompt_token_ids": encoder.prompt_ids("x") + [ord(c) for c in "yes"]},
    ]
    assert result[1].shape == (0,)
    for prompt, completion, logprobs in zip(prompts, completions, result, strict=True):
        start = len(encoder.prompt_ids(prompt))
        expected = [fake_logprob(start + j, ord(c)) for j, c in enumerate(completion)]
        assert logprobs.dtype == torch.float32
        assert logprobs.tolist() == pytest.approx(expected)


def test_completion_logprobs_need_one_completion_per_prompt(engine: VLLMEngine):
    with pytest.raises(ValueError, match="2 prompts but 1 completions"):
        engine.completion_logprobs(["a", "b"], ["x"])


# --- threads -------------------------------------------------------------------------------------


class SlowFakeLLM(FakeLLM):
    """Counts how many generate calls are inside vLLM at once."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.inside = self.most_inside = 0

    def generate(self, prompts, sampling_params, **kwargs):
        self.inside += 1
        self.most_inside = max(self.most_inside, self.inside)
        time.sleep(0.02)  # long enough for the other threads to arrive while this call is inside
        try:
            return super().generate(prompts, sampling_params, **kwargs)
        finally:
            self.inside -= 1


def test_calls_from_several_threads_take_turns(fake_vllm, models_config: ModelsConfig):
    fake_vllm.LLM = SlowFakeLLM
    engine = VLLMEngine("org/student", FakeEncoder(), models_config)
    with ThreadPoolExecutor(max_workers=4) as pool:
        jobs = [pool.submit(engine.generate, [f"q{i}"], n=2) for i in range(4)]
        jobs += [pool.submit(engine.completion_logprobs, ["q"], ["ok"]) for _ in range(2)]
        results = [job.result() for job in jobs]
    assert engine.llm.most_inside == 1
    assert len(engine.llm.calls) == 6
    assert results[0] == [["prompt0-sample0", "prompt0-sample1"]]


# --- the search's student on vLLM ----------------------------------------------------------------


class FakeStudent(FakeEncoder):
    """The transformers student's scoring API; it must never generate when vLLM samples."""

    def __init__(self) -> None:
        super().__init__()
        self.scored: list[tuple[list[list[int]], list[list[int]]]] = []

    def generate(self, *args: Any, **kwargs: Any) -> list[list[str]]:
        raise AssertionError("the transformers student generated; vLLM should have")

    def token_logprobs(self, prompt_ids, completion_ids) -> list[torch.Tensor]:
        self.scored.append((list(prompt_ids), list(completion_ids)))
        return [torch.full((len(c),), -1.0) for c in completion_ids]

    def completion_logprobs(self, prompts, completions) -> list[torch.Tensor]:
        ids = [self.tokenizer(c, add_special_tokens=False)["input_ids"] for c in completions]
        return self.token_logprobs([self.prompt_ids(p) for p in prompts], ids)


QUESTION = "Tom has 3 apples and buys 2 more. How many apples does he have?"
REFERENCE = "3 + 2 = 5\n#### 5"


def student_adapter(model: VLLMSampledStudent) -> StudentAdapter:
    return StudentAdapter(
        model, max_new_tokens=12, temperature=0.7, top_p=0.95, seed=100, references={QUESTION: REFERENCE}
    )


def test_the_search_student_samples_with_vllm_and_scores_with_the_student(engine: VLLMEngine, tmp_path: Path):
    engine.set_adapter(write_fake_adapter(tmp_path / "adapter"))
    student = FakeStudent()
    adapter = student_adapter(VLLMSampledStudent(student, engine))

    steps = asyncio.run(adapter.propose(QUESTION, "Tom starts with 3 apples.", "student", 2))
    assert [s.text for s in steps] == ["prompt0-sample0", "prompt0-sample1"]
    assert {s.producer for s in steps} == {"student"}
    call = last_call(engine)
    # vLLM continues the student's own answer: the templated question, the solution so far, a line break.
    answer_so_far = student.prompt_ids([{"role": "user", "content": QUESTION}]) + [
        ord(c) for c in "Tom starts with 3 apples.\n"
    ]
    assert call["prompts"] == [{"prompt_token_ids": answer_so_far}]
    (params,) = call["params"]  # a seed gives one SamplingParams per prompt
    assert (params.n, params.max_tokens, params.seed) == (2, 12, 101)
    assert call["lora_request"].lora_int_id == 1  # the latest adapter samples
    assert adapter.tokens_used() == 2 * len("prompt0-sample0")

    pres = asyncio.run(adapter.score(QUESTION, "", ["3 + 2 = 5"]))
    assert len(engine.llm.calls) == 1  # PRE did not ask vLLM
    reference_call, step_call = student.scored
    assert reference_call[1] == [[ord(c) for c in REFERENCE]]
    assert step_call[1] == [[ord(c) for c in "3 + 2 = 5"]]
    assert pres == [0.0]  # the fake gives every token -1: step and reference equally likely


def test_with_vllm_logprobs_the_search_scores_through_the_engine(engine: VLLMEngine):
    student = FakeStudent()
    adapter = student_adapter(VLLMSampledStudent(student, engine, logprobs="vllm"))
    (pre,) = asyncio.run(adapter.score(QUESTION, "", ["3 + 2 = 5"]))
    assert student.scored == []
    assert [c["params"].prompt_logprobs for c in engine.llm.calls] == [1, 1]  # the reference, then the step
    assert -1.0 <= pre <= 1.0


def test_sampled_student_rejects_an_unknown_logprob_source(engine: VLLMEngine):
    with pytest.raises(ValueError, match="'student' or 'vllm'"):
        VLLMSampledStudent(FakeStudent(), engine, logprobs="transformers")  # type: ignore[arg-type]
