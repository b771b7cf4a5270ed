"""Optional vLLM engine: the student's `generate` API served by vLLM, with the student's latest LoRA.

Why: sampling many completions per question (MCTS expansions, GRPO groups) is the slow part of a
run, and vLLM's continuous batching and paged KV cache do it several times faster than
`model.generate`. The transformers `StudentModel` stays the model that trains and that computes
the log-probs entering the loss; after each `save_adapter`, `set_adapter` points vLLM at the new
weights under a new adapter id (vLLM caches adapters by id, so reusing one would serve stale
weights).

Quantization: vLLM serves the *bf16* base weights (models.yaml's 4-bit compute dtype) plus the
LoRA, while the student trains on an nf4 4-bit base. Samples therefore come from a policy that
differs from the trained one by nf4's quantization error, the usual rollout-engine/trainer
mismatch; that is why loss log-probs come from the student, and `completion_logprobs` here is for
measuring the gap and for scoring that may tolerate it. A 3B model in bf16 takes ~6.5 GB, which
fits beside the 4-bit student on one GPU. vLLM's in-flight bitsandbytes 4-bit is available by
passing `quantization="bitsandbytes"` (closer to the student, less memory), but it is not the
default: it decodes more slowly and LoRA on bitsandbytes layers is newer and less exercised
in vLLM.

Templating has one implementation, the student's: the engine takes anything with
`prompt_ids(prompt)` and a `tokenizer` (a `StudentModel`) and sends vLLM token ids, never text, so
vLLM cannot re-tokenize the template and add a second BOS.

`vllm.LLM` takes one call at a time; the engine holds a lock around each, so that callers in
several threads (the search's student and teacher proposers, each in `asyncio.to_thread`) take
turns instead of corrupting its state. `VLLMSampledStudent` is the model the search's
`models.policy.StudentPolicy` is given to sample its proposals and rollouts with vLLM.

vLLM is imported only when an engine is built: a CPU install never needs it (its wheels are
CUDA-only), and importing this module never imports it.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from types import ModuleType
from typing import Any, Literal, Protocol

import torch
from transformers import PreTrainedTokenizerBase

from alphazero_llm.config import ModelsConfig
from alphazero_llm.models.locate import resolve_model_path
from alphazero_llm.models.sampling import Sampling, TextGeneration, cut_after_answer
from alphazero_llm.models.student import Prompt, StudentModel

logger = logging.getLogger(__name__)

VLLM_INSTALL_HINT = "pip install 'alphazero-llm-trainer[vllm]'"
# The LoRA ranks vLLM accepts for max_lora_rank (vllm.config.lora.MaxLoRARanks).
VLLM_LORA_RANKS = (1, 8, 16, 32, 64, 128, 256, 320, 512)
ADAPTER_FILES = ("adapter_config.json", "adapter_model.safetensors")


class VLLMUnavailableError(ImportError):
    """vLLM is not installed (it needs CUDA); the message says how to install it."""


class PromptEncoder(Protocol):
    """What the engine needs from the student: its chat template as token ids, and its tokenizer."""

    tokenizer: PreTrainedTokenizerBase

    def prompt_ids(self, prompt: Prompt) -> list[int]: ...


def import_vllm() -> ModuleType:
    """`import vllm`, or a `VLLMUnavailableError` that names the extra to install."""
    try:
        import vllm
    except ImportError as exc:
        raise VLLMUnavailableError(
            f"the vLLM engine needs vLLM, which is not installed: {VLLM_INSTALL_HINT} "
            "(vLLM's wheels need an NVIDIA GPU with CUDA; on CPU use StudentModel.generate)"
        ) from exc
    return vllm


def vllm_lora_rank(r: int) -> int:
    """The smallest `max_lora_rank` vLLM accepts that holds an adapter of rank `r`."""
    for rank in VLLM_LORA_RANKS:
        if rank >= r:
            return rank
    raise ValueError(f"LoRA rank {r} exceeds vLLM's largest max_lora_rank {VLLM_LORA_RANKS[-1]}")


class VLLMEngine(TextGeneration):
    """`StudentModel`'s sampling and log-prob API, run by `vllm.LLM` with the latest adapter."""

    def __init__(
        self,
        model: str,
        encoder: PromptEncoder,
        config: ModelsConfig,
        *,
        gpu_memory_utilization: float | None = None,
        seed: int = 0,
        dtype: str | None = None,
        quantization: str | None = None,
        enforce_eager: bool | None = None,
        adapter_name: str = "student",
        llm_kwargs: Mapping[str, Any] | None = None,
    ) -> None:
        """Start vLLM on `model` (the student's name: hub id, directory, .gguf or `embedded`).

        `gpu_memory_utilization` is the share of the GPU vLLM may take for weights, activations
        and KV cache. It, `enforce_eager` and `quantization` default to models.yaml's `vllm`
        section (so `quantization=None` means "as configured"); `dtype` defaults to its 4-bit
        compute dtype. `llm_kwargs` go to `vllm.LLM` last.
        """
        vllm = import_vllm()
        from vllm.lora.request import LoRARequest

        self._vllm = vllm
        self._lora_request_type = LoRARequest
        self.encoder = encoder
        self.tokenizer, self.prompt_ids = encoder.tokenizer, encoder.prompt_ids  # templating is the encoder's
        self.adapter_name = adapter_name
        self._adapter_id = 0
        self._adapter: Any | None = None  # the current LoRARequest
        self._adapter_enabled = True
        self._lock = threading.Lock()  # vllm.LLM serves one call at a time (module docstring)
        defaults = config.vllm
        kwargs: dict[str, Any] = {
            "model": resolve_model_path(model),
            "dtype": config.student.bnb_4bit_compute_dtype if dtype is None else dtype,
            "gpu_memory_utilization": (
                defaults.gpu_memory_utilization if gpu_memory_utilization is None else gpu_memory_utilization
            ),
            "max_model_len": config.student.max_seq_len,
            "seed": seed,
            "enable_lora": True,
            "max_lora_rank": vllm_lora_rank(config.lora.r),
            "max_loras": 1,  # one adapter at a time: an old id is evicted when a new one loads
            "trust_remote_code": config.student.trust_remote_code,
            "enforce_eager": defaults.enforce_eager if enforce_eager is None else enforce_eager,
        }
        quantization = defaults.quantization if quantization is None else quantization
        if quantization is not None:
            kwargs["quantization"] = quantization
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            # A data-parallel run (training.distributed): one engine per rank on the rank's own GPU. vLLM would
            # otherwise try to set up a process group of its own inside the launcher's; "external_launcher" makes
            # it use the launcher's, as TRL's colocated vLLM does.
            kwargs["distributed_executor_backend"] = "external_launcher"
        kwargs.update(llm_kwargs or {})
        logger.info("Starting vLLM on %s (%s)", kwargs["model"], kwargs["dtype"])
        self.llm = vllm.LLM(**kwargs)

    # --- adapters ------------------------------------------------------------------------------

    @property
    def adapter_id(self) -> int:
        """The id of the latest adapter (0: none set yet); each `set_adapter` takes a new one."""
        return self._adapter_id

    @property
    def adapter_path(self) -> Path | None:
        return None if self._adapter is None else Path(self._adapter.lora_path)

    @property
    def lora_request(self) -> Any | None:
        """What `generate` passes to vLLM: the latest adapter, or None for the base model."""
        return self._adapter if self._adapter_enabled else None

    def set_adapter(self, directory: Path | str) -> None:
        """Serve the PEFT adapter in `directory` (as written by `StudentModel.save_adapter`).

        Call it after every save, even to the same directory: the new id makes vLLM read the
        files again instead of serving the weights it cached under the old id.
        """
        path = Path(directory).resolve()
        missing = [name for name in ADAPTER_FILES if not (path / name).is_file()]
        if missing:
            raise FileNotFoundError(f"{path}: not a saved LoRA adapter (missing {', '.join(missing)})")
        self._adapter_id += 1
        self._adapter = self._lora_request_type(
            lora_name=f"{self.adapter_name}-{self._adapter_id}",  # vLLM compares requests by name
            lora_int_id=self._adapter_id,
            lora_path=str(path),
        )
        logger.info("vLLM adapter %d: %s", self._adapter_id, path)

    def clear_adapter(self) -> None:
        """Serve the base model from now on."""
        self._adapter = None

    @contextmanager
    def reference(self) -> Iterator[VLLMEngine]:
        """The base model (adapter disabled), like `StudentModel.reference()`."""
        enabled, self._adapter_enabled = self._adapter_enabled, False
        try:
            yield self
        finally:
            self._adapter_enabled = enabled

    # --- generation ----------------------------------------------------------------------------

    def sample_ids(
        self, prompt_ids: Sequence[Sequence[int]], sampling: Sampling, *, n: int = 1, seed: int | None = None
    ) -> list[list[list[int]]]:
        """`n` completions per prompt as the new token ids vLLM sampled, a final EOS removed.

        With `sampling.stop`, vLLM's ids run to the end of the stop string (its tokens included),
        like `StudentModel.sample_ids`. vLLM schedules its own batches.
        """
        eos = self.encoder.tokenizer.eos_token_id
        samples = [[_generated_ids(c, eos) for c in out] for out in self._sample(prompt_ids, sampling, n=n, seed=seed)]
        if sampling.stop_at_answer:  # vLLM has no such stop; the ids are cut where the student's would stop
            samples = [[cut_after_answer(ids, self.tokenizer.decode) for ids in group] for group in samples]
        return samples

    def _sample(
        self, prompt_ids: Sequence[Sequence[int]], sampling: Sampling, *, n: int, seed: int | None
    ) -> list[list[Any]]:
        """Each prompt's `n` vLLM `CompletionOutput`s, in index order.

        With a seed, prompt i samples with seeds `seed + i*n ...` (vLLM gives the j-th of the n
        samples `seed + j`), so every sample has its own reproducible stream.
        """
        if n < 1:
            raise ValueError("n must be >= 1")
        if not prompt_ids:
            return []

        def params(sample_seed: int | None) -> Any:
            return self._vllm.SamplingParams(
                n=n,
                temperature=0.0 if sampling.greedy else sampling.temperature,
                top_p=1.0 if sampling.greedy else sampling.top_p,
                max_tokens=sampling.max_new_tokens,
                stop=list(sampling.stop) or None,  # vLLM leaves the stop string out of the text
                seed=sample_seed,
            )

        per_prompt = params(None) if seed is None else [params(seed + i * n) for i in range(len(prompt_ids))]
        outputs = self._run([list(ids) for ids in prompt_ids], per_prompt)
        return [sorted(out.outputs, key=lambda c: c.index) for out in outputs]

    # --- log-probs -----------------------------------------------------------------------------

    def completion_logprobs(
        self, prompts: Sequence[Prompt], completions: Sequence[str], *, temperature: float = 1.0
    ) -> list[torch.Tensor]:
        """Per-token log-probs (fp32, on CPU) of each completion given its templated prompt, as vLLM computes them.

        Same tokenization as `StudentModel.completion_logprobs`, so the two are comparable token
        by token (they differ by the base's quantization, see the module docstring). vLLM's
        prompt log-probs are at temperature 1: any other `temperature` raises ValueError.
        """
        if len(prompts) != len(completions):
            raise ValueError(f"{len(prompts)} prompts but {len(completions)} completions")
        prompt_ids = [self.encoder.prompt_ids(p) for p in prompts]
        tokenizer = self.encoder.tokenizer
        completion_ids = [tokenizer(c, add_special_tokens=False)["input_ids"] for c in completions]
        return self.token_logprobs(prompt_ids, completion_ids, temperature=temperature)

    def token_logprobs(
        self, prompt_ids: Sequence[Sequence[int]], completion_ids: Sequence[Sequence[int]], *, temperature: float = 1.0
    ) -> list[torch.Tensor]:
        """`completion_logprobs` on token ids: vLLM's prompt log-probs of prompt+completion, completion part.

        vLLM computes prompt log-probs from the raw logits, at temperature 1, whatever the
        SamplingParams say; so `temperature` must be 1.0 (ValueError otherwise). Log-probs at a
        sampling temperature (for a ratio or a KL) come from `StudentModel.token_logprobs`.

        `prompt_logprobs=1`, not 0: each position's dict holds the actual token either way, and
        early vLLM V1 releases read 0 as "off". One token is generated because vLLM must.
        """
        if temperature != 1.0:
            raise ValueError(
                f"vLLM's prompt log-probs are at temperature 1, not {temperature}: "
                "score at another temperature with StudentModel.token_logprobs"
            )
        if len(prompt_ids) != len(completion_ids):
            raise ValueError(f"{len(prompt_ids)} prompts but {len(completion_ids)} completions")
        out = [torch.empty(0) for _ in prompt_ids]
        scored = [i for i, c in enumerate(completion_ids) if c]
        if not scored:
            return out
        params = self._vllm.SamplingParams(n=1, temperature=0.0, max_tokens=1, prompt_logprobs=1)
        outputs = self._run([[*prompt_ids[i], *completion_ids[i]] for i in scored], params)
        for i, result in zip(scored, outputs, strict=True):
            # prompt_logprobs[t] maps token t (and the top-1) to log p(token | tokens < t); entry 0 is
            # None. Indexed one position at a time, which both a list and vLLM's FlatLogprobs support.
            positions, start = result.prompt_logprobs, len(prompt_ids[i])
            if positions is None or len(positions) != start + len(completion_ids[i]):
                raise RuntimeError(f"vLLM returned no prompt log-probs for all tokens of pair {i}")
            values = [positions[start + j][token].logprob for j, token in enumerate(completion_ids[i])]
            out[i] = torch.tensor(values, dtype=torch.float32)
        return out

    def _run(self, token_ids: list[list[int]], sampling: Any) -> list[Any]:
        prompts = [{"prompt_token_ids": ids} for ids in token_ids]  # a vllm.inputs.TokensPrompt
        with self._lock:
            outputs = self.llm.generate(prompts, sampling, use_tqdm=False, lora_request=self.lora_request)
        if len(outputs) != len(prompts):
            raise RuntimeError(f"vLLM returned {len(outputs)} results for {len(prompts)} prompts")
        return outputs


class VLLMSampledStudent(TextGeneration):
    """The student as `models.policy.StudentPolicy` uses it, with `sample_ids` served by a `VLLMEngine`.

    The search's student proposals and rollouts are sampled by vLLM with the engine's latest adapter;
    templating (`prompt_ids`, `tokenizer`) is the student's. Log-probs (the search's PRE and PUCT
    priors) come from `logprobs`: "student" (default) scores with the transformers student, the nf4
    policy that the loss trains; "vllm" scores with the engine (bf16 base, faster, off by the
    quantization gap; see the module docstring).
    """

    def __init__(
        self, student: StudentModel, engine: VLLMEngine, *, logprobs: Literal["student", "vllm"] = "student"
    ) -> None:
        if logprobs not in ("student", "vllm"):
            raise ValueError(f"logprobs must be 'student' or 'vllm', not {logprobs!r}")
        self.student = student
        self.engine = engine
        self.logprobs = logprobs
        self.tokenizer, self.prompt_ids = student.tokenizer, student.prompt_ids  # templating is the student's

    def sample_ids(
        self, prompt_ids: Sequence[Sequence[int]], sampling: Sampling, *, n: int = 1, seed: int | None = None
    ) -> list[list[list[int]]]:
        """`VLLMEngine.sample_ids`."""
        return self.engine.sample_ids(prompt_ids, sampling, n=n, seed=seed)

    def _scorer(self) -> StudentModel | VLLMEngine:
        return self.student if self.logprobs == "student" else self.engine

    def token_logprobs(
        self, prompt_ids: Sequence[Sequence[int]], completion_ids: Sequence[Sequence[int]], *, temperature: float = 1.0
    ) -> list[torch.Tensor]:
        """The chosen scorer's `token_logprobs` (the engine's accept only temperature 1)."""
        return self._scorer().token_logprobs(prompt_ids, completion_ids, temperature=temperature)

    def completion_logprobs(
        self, prompts: Sequence[Prompt], completions: Sequence[str], *, temperature: float = 1.0
    ) -> list[torch.Tensor]:
        """The chosen scorer's `completion_logprobs` (the engine's accept only temperature 1)."""
        return self._scorer().completion_logprobs(prompts, completions, temperature=temperature)


def _generated_ids(completion: Any, eos: int | None) -> list[int]:
    """A vLLM `CompletionOutput`'s token ids without the EOS that ended it.

    vLLM keeps the token that stopped a sequence in `token_ids`: the tokenizer's EOS, or another
    of the generation config's EOS ids, which it reports as an int `stop_reason`. A stop string
    (a str `stop_reason`) keeps its tokens, as `StudentModel.sample_ids` does.
    """
    ids = list(completion.token_ids)
    stop_reason = completion.stop_reason
    ended_on = {eos, stop_reason if isinstance(stop_reason, int) else None} - {None}
    return ids[:-1] if ids and ids[-1] in ended_on else ids
