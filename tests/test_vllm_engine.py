"""The optional vLLM engine, on a CPU without vLLM: lazy import, the install hint, and its bookkeeping.

vLLM's wheels are CUDA-only, so the engine's own logic (adapter ids, the LoRARequest it sends,
how `generate`'s arguments map to SamplingParams, which prompt log-probs it keeps) is tested
against the small hand-written fake `vllm` of `alphazero_llm.testing.fake_vllm`, put into
`sys.modules` by conftest's `fake_vllm` fixture. The fake records what the engine asks for and
answers in vLLM's output shapes; it checks this module's logic, not vLLM. The real engine is
exercised on a GPU by bench/gpu_check.py.
"""

from __future__ import annotations

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
from alphazero_llm.models.sampling import Sampling
from alphazero_llm.models.vllm_engine import (
    VLLMEngine,
    VLLMSampledStudent,
    VLLMUnavailableError,
    _generated_ids,
    vllm_lora_rank,
)
from alphazero_llm.testing.fake_vllm import (
    FAKE_EOS,
    FakeCompletion,
    FakeEncoder,
    FakeLLM,
    FakeLoRARequest,
    FakeSamplingParams,
    fake_logprob,
    fake_token_ids,
    write_fake_adapter,
)

SAMPLING = Sampling(max_new_tokens=16, temperature=0.7, top_p=0.95)


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


def test_inside_a_data_parallel_run_the_engine_joins_the_launchers_group(fake_vllm, models_config: ModelsConfig):
    """With a process group up (torchrun), each rank's engine uses it ("external_launcher", as TRL colocates)."""
    import socket

    import torch

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    torch.distributed.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=0, world_size=1)
    try:
        kwargs = VLLMEngine("org/student", FakeEncoder(), models_config).llm.kwargs
    finally:
        torch.distributed.destroy_process_group()
    assert kwargs["distributed_executor_backend"] == "external_launcher"


def test_lora_rank_is_rounded_up_to_one_vllm_accepts(fake_vllm, models_config: ModelsConfig):
    config = dataclasses.replace(models_config, lora=dataclasses.replace(models_config.lora, r=20))
    assert VLLMEngine("org/student", FakeEncoder(), config).llm.kwargs["max_lora_rank"] == 32
    assert [vllm_lora_rank(r) for r in (1, 2, 8, 9, 64, 65, 512)] == [1, 8, 8, 16, 64, 128, 512]
    with pytest.raises(ValueError, match="513"):
        vllm_lora_rank(513)


# --- adapters ------------------------------------------------------------------------------------


def test_each_set_adapter_takes_a_new_id_and_generate_sends_the_latest(engine: VLLMEngine, tmp_path: Path):
    first, second = write_fake_adapter(tmp_path / "step-1"), write_fake_adapter(tmp_path / "step-2")
    engine.generate(["hi"], SAMPLING)
    assert last_call(engine)["lora_request"] is None  # no adapter yet: the base model
    assert engine.adapter_id == 0

    engine.set_adapter(first)
    engine.set_adapter(second)
    engine.generate(["hi"], SAMPLING)
    assert last_call(engine)["lora_request"] == FakeLoRARequest("student-2", 2, str(second.resolve()))

    # Saving again into the same directory: a new id, so vLLM reads the new weights.
    engine.set_adapter(first)
    engine.completion_logprobs(["hi"], ["ok"])
    assert last_call(engine)["lora_request"] == FakeLoRARequest("student-3", 3, str(first.resolve()))
    assert (engine.adapter_id, engine.adapter_path) == (3, first.resolve())


def test_reference_disables_the_adapter_for_its_block_only(engine: VLLMEngine, tmp_path: Path):
    engine.set_adapter(write_fake_adapter(tmp_path / "adapter"))
    with engine.reference():
        engine.generate(["hi"], SAMPLING)
        assert last_call(engine)["lora_request"] is None
    engine.generate(["hi"], SAMPLING)
    assert last_call(engine)["lora_request"].lora_int_id == 1
    engine.clear_adapter()
    engine.generate(["hi"], SAMPLING)
    assert last_call(engine)["lora_request"] is None


def test_set_adapter_refuses_a_directory_without_a_write_fake_adapter(engine: VLLMEngine, tmp_path: Path):
    (tmp_path / "adapter_config.json").write_text("{}")
    with pytest.raises(FileNotFoundError, match=r"adapter_model\.safetensors"):
        engine.set_adapter(tmp_path)
    assert engine.adapter_id == 0


# --- generate ------------------------------------------------------------------------------------


def test_generate_sends_the_encoders_token_ids_and_returns_n_per_prompt_in_order(engine: VLLMEngine):
    chat = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "2+2?"}]
    result = engine.generate([chat, "3+3?"], SAMPLING, n=3)
    encoder = FakeEncoder()
    assert last_call(engine)["prompts"] == [
        {"prompt_token_ids": encoder.prompt_ids(chat)},
        {"prompt_token_ids": encoder.prompt_ids("3+3?")},
    ]
    assert result == [[f"prompt{p}-sample{j}" for j in range(3)] for p in range(2)]


def test_sample_ids_are_vllms_token_ids_without_the_final_eos(engine: VLLMEngine):
    prompt_ids = [[1, 50, 51], [1, 52]]
    ids = engine.sample_ids(prompt_ids, SAMPLING, n=2, seed=4)
    assert ids == [[fake_token_ids(f"prompt{p}-sample{j}") for j in range(2)] for p in range(2)]
    assert last_call(engine)["prompts"] == [{"prompt_token_ids": p} for p in prompt_ids]
    texts = engine.generate_ids(prompt_ids, SAMPLING, n=2, seed=4)
    assert texts == [["".join(map(chr, sample)) for sample in group] for group in ids]


def test_only_the_token_that_ended_a_sequence_is_dropped():
    text = "3 + 4 = 7\n"
    ids = fake_token_ids(text)
    assert _generated_ids(FakeCompletion(0, text, [*ids, FAKE_EOS]), FAKE_EOS) == ids  # the tokenizer's EOS
    # Another EOS id of the generation config: vLLM reports it as an int stop_reason.
    assert _generated_ids(FakeCompletion(0, text, [*ids, 9], stop_reason=9), FAKE_EOS) == ids
    # A stop string keeps its tokens; a sequence cut by max_tokens keeps all of them.
    assert _generated_ids(FakeCompletion(0, text[:-1], ids, stop_reason="\n"), FAKE_EOS) == ids
    assert _generated_ids(FakeCompletion(0, text, ids, finish_reason="length"), FAKE_EOS) == ids
    assert _generated_ids(FakeCompletion(0, "", [FAKE_EOS]), FAKE_EOS) == []


def test_sampling_maps_to_sampling_params(engine: VLLMEngine):
    engine.generate(["q"], Sampling(50, temperature=0.7, top_p=0.9, stop=("\n\n", "", "####")), n=4)
    assert last_call(engine)["params"] == FakeSamplingParams(
        n=4, temperature=0.7, top_p=0.9, max_tokens=50, stop=["\n\n", "####"], seed=None
    )


def test_temperature_zero_is_greedy_and_no_stop_is_none(engine: VLLMEngine):
    engine.generate(["q"], Sampling(8, temperature=0.0, top_p=0.5), n=2)
    assert last_call(engine)["params"] == FakeSamplingParams(n=2, temperature=0.0, top_p=1.0, max_tokens=8)
    engine.sample_ids([[1, 2]], Sampling.greedy_decoding(8))
    assert last_call(engine)["params"] == FakeSamplingParams(n=1, temperature=0.0, top_p=1.0, max_tokens=8)


def test_a_seed_gives_every_prompt_its_own_seeds(engine: VLLMEngine):
    engine.generate(["a", "b", "c"], SAMPLING, n=3, seed=10)
    assert [p.seed for p in last_call(engine)["params"]] == [10, 13, 16]  # vLLM adds j for sample j
    engine.sample_ids([[1], [2]], SAMPLING, n=2, seed=10)
    assert [p.seed for p in last_call(engine)["params"]] == [10, 12]


def test_generate_rejects_empty_requests(engine: VLLMEngine):
    with pytest.raises(ValueError, match=">= 1"):
        engine.generate(["q"], SAMPLING, n=0)
    with pytest.raises(ValueError, match=">= 1"):
        engine.sample_ids([[1]], SAMPLING, n=0)
    assert engine.llm.calls == []


def test_no_prompts_means_no_call(engine: VLLMEngine):
    assert engine.generate([], SAMPLING) == []
    assert engine.sample_ids([], SAMPLING) == []
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


def test_vllm_scores_only_at_temperature_one(engine: VLLMEngine):
    (at_one,) = engine.token_logprobs([[1, 2]], [[3, 4]], temperature=1.0)
    assert at_one.tolist() == pytest.approx([fake_logprob(2, 3), fake_logprob(3, 4)])
    for temperature in (0.7, 0.0):
        with pytest.raises(ValueError, match="temperature 1"):
            engine.token_logprobs([[1, 2]], [[3, 4]], temperature=temperature)
        with pytest.raises(ValueError, match="temperature 1"):
            engine.completion_logprobs(["q"], ["a"], temperature=temperature)
    assert len(engine.llm.calls) == 1


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
        jobs = [pool.submit(engine.generate, [f"q{i}"], SAMPLING, n=2) for i in range(4)]
        jobs += [pool.submit(engine.completion_logprobs, ["q"], ["ok"]) for _ in range(2)]
        results = [job.result() for job in jobs]
    assert engine.llm.most_inside == 1
    assert len(engine.llm.calls) == 6
    assert results[0] == [["prompt0-sample0", "prompt0-sample1"]]


# --- the student sampled by vLLM ------------------------------------------------------------------


class FakeStudent(FakeEncoder):
    """The transformers student's scoring API; it must never generate when vLLM samples."""

    def __init__(self) -> None:
        super().__init__()
        self.scored: list[tuple[list[list[int]], list[list[int]], float]] = []

    def generate(self, *args: Any, **kwargs: Any) -> list[list[str]]:
        raise AssertionError("the transformers student generated; vLLM should have")

    generate_ids = sample_ids = generate

    def token_logprobs(self, prompt_ids, completion_ids, *, temperature: float = 1.0) -> list[torch.Tensor]:
        self.scored.append((list(prompt_ids), list(completion_ids), temperature))
        return [torch.full((len(c),), -1.0) for c in completion_ids]

    def completion_logprobs(self, prompts, completions, *, temperature: float = 1.0) -> list[torch.Tensor]:
        ids = [self.tokenizer(c, add_special_tokens=False)["input_ids"] for c in completions]
        return self.token_logprobs([self.prompt_ids(p) for p in prompts], ids, temperature=temperature)


def test_the_sampled_student_samples_with_vllm_and_its_latest_adapter(engine: VLLMEngine, tmp_path: Path):
    engine.set_adapter(write_fake_adapter(tmp_path / "adapter"))
    sampled = VLLMSampledStudent(FakeStudent(), engine)
    answer_so_far = sampled.prompt_ids("Tom has 3 apples.") + fake_token_ids("He buys 2.\n")

    ids = sampled.sample_ids([answer_so_far], SAMPLING, n=2, seed=100)
    assert ids == [[fake_token_ids("prompt0-sample0"), fake_token_ids("prompt0-sample1")]]
    call = last_call(engine)
    assert call["prompts"] == [{"prompt_token_ids": answer_so_far}]
    (params,) = call["params"]  # a seed gives one SamplingParams per prompt
    assert (params.n, params.max_tokens, params.temperature, params.top_p, params.seed) == (2, 16, 0.7, 0.95, 100)
    assert call["lora_request"].lora_int_id == 1
    assert sampled.generate_ids([answer_so_far], SAMPLING, n=2, seed=100) == [["prompt0-sample0", "prompt0-sample1"]]
    assert sampled.generate(["Tom has 3 apples."], SAMPLING, seed=5) == [["prompt0-sample0"]]
    assert len(engine.llm.calls) == 3


def test_the_sampled_student_scores_with_the_student_at_the_given_temperature(engine: VLLMEngine):
    student = FakeStudent()
    sampled = VLLMSampledStudent(student, engine)
    (logprobs,) = sampled.token_logprobs([[1, 2]], [[3, 4, 5]], temperature=0.7)
    assert logprobs.tolist() == [-1.0] * 3
    sampled.completion_logprobs(["q"], ["ab"])
    assert student.scored == [([[1, 2]], [[3, 4, 5]], 0.7), ([FakeEncoder().prompt_ids("q")], [[97, 98]], 1.0)]
    assert engine.llm.calls == []  # vLLM was not asked


def test_with_vllm_logprobs_the_sampled_student_scores_through_the_engine(engine: VLLMEngine):
    student = FakeStudent()
    sampled = VLLMSampledStudent(student, engine, logprobs="vllm")
    (logprobs,) = sampled.completion_logprobs(["q"], ["ab"])
    assert logprobs.shape == (2,)
    sampled.token_logprobs([[1, 2]], [[3]], temperature=1.0)
    assert student.scored == []
    assert [c["params"].prompt_logprobs for c in engine.llm.calls] == [1, 1]
    with pytest.raises(ValueError, match="temperature 1"):
        sampled.token_logprobs([[1, 2]], [[3]], temperature=0.7)


def test_sampled_student_rejects_an_unknown_logprob_source(engine: VLLMEngine):
    with pytest.raises(ValueError, match="'student' or 'vllm'"):
        VLLMSampledStudent(FakeStudent(), engine, logprobs="transformers")  # type: ignore[arg-type]
