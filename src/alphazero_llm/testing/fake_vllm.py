"""A small hand-written fake `vllm` module, for testing the vLLM engine and its wiring without CUDA.

vLLM's wheels are CUDA-only, so `models/vllm_engine.py` (adapter ids, the LoRARequest it sends, how
`generate`'s arguments map to SamplingParams, which prompt log-probs it keeps) and the training run
that uses it are tested against this fake, put into `sys.modules` under `vllm`, `vllm.lora` and
`vllm.lora.request` (tests/conftest.py's `fake_vllm` fixture). `FakeLLM` records what it is asked and
answers in vLLM's output shapes; it checks this project's logic, not vLLM.

`FakeEncoder` stands in for the student's templating (`prompt_ids`, `tokenizer`): BOS 1, then one id
per character (EOS is 2); `write_fake_adapter` writes the two files `VLLMEngine.set_adapter` looks for.
"""

from __future__ import annotations

import dataclasses
import json
import types
from collections.abc import Sequence
from pathlib import Path
from typing import Any


@dataclasses.dataclass
class FakeSamplingParams:
    """The SamplingParams fields the engine may set, with vLLM's defaults; any other keyword fails."""

    n: int = 1
    temperature: float = 1.0
    top_p: float = 1.0
    max_tokens: int | None = 16
    stop: list[str] | None = None
    seed: int | None = None
    prompt_logprobs: int | None = None


@dataclasses.dataclass
class FakeLoRARequest:
    lora_name: str
    lora_int_id: int
    lora_path: str


@dataclasses.dataclass
class FakeLogprob:
    logprob: float


@dataclasses.dataclass
class FakeCompletion:
    """A vLLM `CompletionOutput`: its text, the token ids it sampled (EOS included) and why it stopped."""

    index: int
    text: str
    token_ids: list[int]
    finish_reason: str = "stop"
    stop_reason: int | str | None = None  # None: ended on the tokenizer's EOS


@dataclasses.dataclass
class FakeRequestOutput:
    outputs: list[FakeCompletion]
    prompt_logprobs: list[dict[int, FakeLogprob] | None] | None


def fake_logprob(position: int, token: int) -> float:
    """What the fake says log p(token at `position`) is: distinct for every (position, token)."""
    return -(position + token / 1000)


class FakeLLM:
    """Records its constructor arguments and every generate call; answers in vLLM's shapes.

    Sample j of prompt i (in the call's order) is the text `prompt{i}-sample{j}`; its token ids are
    `FakeTokenizer`'s (one per character) followed by the EOS id that ended it, as vLLM keeps it.
    """

    def __init__(self, **kwargs: Any) -> None:
        self.kwargs = kwargs
        self.calls: list[dict[str, Any]] = []

    def generate(self, prompts, sampling_params, *, use_tqdm=True, lora_request=None):
        self.calls.append({"prompts": prompts, "params": sampling_params, "lora_request": lora_request})
        per_prompt = sampling_params if isinstance(sampling_params, list) else [sampling_params] * len(prompts)
        outputs = []
        for number, (prompt, params) in enumerate(zip(prompts, per_prompt, strict=True)):
            ids = prompt["prompt_token_ids"]
            logprobs = None
            if params.prompt_logprobs is not None:
                top = {0: FakeLogprob(-0.001)}  # a top-1 entry beside the actual token
                logprobs = [None] + [{**top, t: FakeLogprob(fake_logprob(p, t))} for p, t in enumerate(ids) if p > 0]
            # Out of index order, as a streamed result could be.
            texts = {j: f"prompt{number}-sample{j}" for j in reversed(range(params.n))}
            completions = [FakeCompletion(j, t, [*fake_token_ids(t), FAKE_EOS]) for j, t in texts.items()]
            outputs.append(FakeRequestOutput(completions, logprobs))
        return outputs


def fake_vllm_modules() -> dict[str, types.ModuleType]:
    """`vllm`, `vllm.lora` and `vllm.lora.request` as fakes, by the names to put them under in `sys.modules`."""
    vllm = types.ModuleType("vllm")
    vllm.LLM = FakeLLM  # type: ignore[attr-defined]
    vllm.SamplingParams = FakeSamplingParams  # type: ignore[attr-defined]
    lora = types.ModuleType("vllm.lora")
    request = types.ModuleType("vllm.lora.request")
    request.LoRARequest = FakeLoRARequest  # type: ignore[attr-defined]
    vllm.lora = lora  # type: ignore[attr-defined]
    lora.request = request  # type: ignore[attr-defined]
    return {"vllm": vllm, "vllm.lora": lora, "vllm.lora.request": request}


FAKE_EOS = 2  # below every character's id


def fake_token_ids(text: str) -> list[int]:
    """`FakeTokenizer`'s ids for `text`: one per character."""
    return [ord(ch) for ch in text]


class FakeTokenizer:
    eos_token_id = FAKE_EOS

    def __call__(self, text: str, add_special_tokens: bool = True) -> dict[str, list[int]]:
        if add_special_tokens:
            raise AssertionError("completions must be tokenized without special tokens")
        return {"input_ids": fake_token_ids(text)}

    def decode(self, ids: Sequence[int], skip_special_tokens: bool = False) -> str:
        return "".join(chr(i) for i in ids if not (skip_special_tokens and i == FAKE_EOS))


class FakeEncoder:
    """Stands in for StudentModel's templating: BOS 1, then one id per character of the messages."""

    def __init__(self) -> None:
        self.tokenizer = FakeTokenizer()

    def prompt_ids(self, prompt: str | Sequence[dict[str, str]]) -> list[int]:
        messages = [{"role": "user", "content": prompt}] if isinstance(prompt, str) else list(prompt)
        return [1] + [ord(ch) for m in messages for ch in f"<{m['role']}>{m['content']}"]


def write_fake_adapter(directory: Path) -> Path:
    """The files of a saved PEFT adapter (empty weights): enough for `VLLMEngine.set_adapter`."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "adapter_config.json").write_text(json.dumps({"r": 32}))
    (directory / "adapter_model.safetensors").write_bytes(b"")
    return directory
