"""The student: the model we train, with a batched generate / log-prob API.

On CUDA it is loaded in bitsandbytes nf4 4-bit with bf16 compute, prepared for
k-bit training, and wrapped with LoRA from `config/models.yaml`. On a CPU it is
a bf16 or fp32 model with the same LoRA: 4-bit is refused there, because after
any no-grad forward bitsandbytes repacks CPU weights and LoRA gradients through
the frozen 4-bit layers become silently wrong (DESIGN.md).

Prompts are chats (a list of `{"role", "content"}` messages) or plain strings
(one user message); both go through the tokenizer's chat template with the
generation prompt, so a completion is the assistant's text.
"""

from __future__ import annotations

import importlib.util
import logging
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch
from peft import LoraConfig as PeftLoraConfig
from peft import PeftModel, get_peft_model, load_peft_weights, set_peft_model_state_dict
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    PreTrainedModel,
    PreTrainedTokenizerBase,
    StoppingCriteria,
    StoppingCriteriaList,
)

from alphazero_llm.config import ModelsConfig
from alphazero_llm.errors import UserError
from alphazero_llm.models.locate import resolve_device, resolve_model_path
from alphazero_llm.models.sampling import Sampling, TextGeneration, answer_line_end, cut_after_answer

logger = logging.getLogger(__name__)

Message = dict[str, str]
Prompt = str | Sequence[Message]

_DTYPES = {"bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32}


def require_bitsandbytes(purpose: str) -> None:
    """bitsandbytes is an extra (`[gpu]`): a clear error naming the install when `purpose` needs it."""
    if importlib.util.find_spec("bitsandbytes") is None:
        raise UserError(
            f"{purpose} needs bitsandbytes, which is not installed: pip install 'alphazero-llm-trainer[gpu]' "
            "(in a checkout: pip install -e '.[gpu]')"
        )


class FourBitOnCPUError(ValueError):
    """4-bit LoRA training on a CPU gives silently wrong gradients; refuse it."""


@dataclass(frozen=True)
class StudentSpec:
    """What to load: resolved from config and CLI, with nothing left implicit."""

    name: str
    device: str = "auto"
    dtype: str | None = None  # None: bf16 compute in 4-bit on CUDA, `cpu_dtype` on CPU
    load_in_4bit: bool | None = None  # None: 4-bit exactly when on CUDA and the config asks for it
    lora: bool = True
    trust_remote_code: bool | None = None  # None: models.yaml's student.trust_remote_code (false)


class StudentModel(TextGeneration):
    """A causal LM (+ LoRA) with batched `sample_ids` (and so `generate`), `token_logprobs` and a `reference()` view."""

    def __init__(
        self, model: PreTrainedModel | PeftModel, tokenizer: PreTrainedTokenizerBase, generation_batch_size: int = 8
    ) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.generation_batch_size = generation_batch_size  # prompts generated at once by `sample_ids`
        if tokenizer.pad_token_id is None:
            tokenizer.pad_token = tokenizer.eos_token

    # --- loading -------------------------------------------------------------------------------

    @classmethod
    def load(cls, spec: StudentSpec, config: ModelsConfig) -> StudentModel:
        device = resolve_device(spec.device)
        on_cuda = device.type == "cuda"
        four_bit = (config.student.load_in_4bit and on_cuda) if spec.load_in_4bit is None else spec.load_in_4bit
        if four_bit and not on_cuda:
            raise FourBitOnCPUError(
                "4-bit loading is refused on CPU: after any no-grad forward (e.g. generate()) bitsandbytes "
                "repacks the CPU weights and LoRA gradients through the frozen 4-bit layers become silently "
                "wrong (about 100% error). Use a bf16 or fp32 LoRA on CPU (models.yaml: student.cpu_dtype)."
            )
        path = resolve_model_path(spec.name)
        dtype_name = spec.dtype or (config.student.bnb_4bit_compute_dtype if four_bit else config.student.cpu_dtype)
        dtype = _DTYPES[dtype_name]
        trust = config.student.trust_remote_code if spec.trust_remote_code is None else spec.trust_remote_code
        kwargs: dict = {"dtype": dtype, "trust_remote_code": trust}
        if four_bit:
            require_bitsandbytes("4-bit loading (models.yaml: student.load_in_4bit)")
            from transformers import BitsAndBytesConfig

            kwargs["quantization_config"] = BitsAndBytesConfig(
                load_in_4bit=True,
                bnb_4bit_quant_type=config.student.bnb_4bit_quant_type,
                bnb_4bit_compute_dtype=dtype,
                bnb_4bit_use_double_quant=config.student.bnb_4bit_use_double_quant,
            )
            # "cuda" is the current device: cuda:LOCAL_RANK in a data-parallel run (training.distributed).
            kwargs["device_map"] = {"": torch.cuda.current_device() if device.index is None else device.index}
        logger.info("Loading student %s (%s, %s)", path, "nf4 4-bit" if four_bit else dtype_name, device)
        tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=trust)
        model = AutoModelForCausalLM.from_pretrained(path, **kwargs)
        if not four_bit:
            model.to(device)
        if four_bit:
            from peft import prepare_model_for_kbit_training

            model = prepare_model_for_kbit_training(model)
        if spec.lora:
            lora = config.lora
            with warnings.catch_warnings():
                # peft still reads transformers' deprecated `is_gradient_checkpointing`; the warning is theirs, not
                # the user's to act on, and would print on every start.
                warnings.filterwarnings(
                    "ignore", message="`is_gradient_checkpointing` is deprecated", category=FutureWarning
                )
                model = get_peft_model(
                    model,
                    PeftLoraConfig(
                        r=lora.r,
                        lora_alpha=lora.alpha,
                        lora_dropout=lora.dropout,
                        bias=lora.bias,
                        target_modules=list(lora.target_modules),
                        task_type="CAUSAL_LM",
                    ),
                )
        model.eval()  # dropout off; the training loop switches to train() around its updates
        return cls(model, tokenizer)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def has_adapter(self) -> bool:
        return isinstance(self.model, PeftModel)

    # --- prompts -------------------------------------------------------------------------------

    def prompt_text(self, prompt: Prompt) -> str:
        """The chat-templated prompt, ending where the assistant's text starts."""
        messages = [{"role": "user", "content": prompt}] if isinstance(prompt, str) else list(prompt)
        return self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)

    def prompt_ids(self, prompt: Prompt) -> list[int]:
        # The template already holds any special tokens; adding more would shift the text.
        return self.tokenizer(self.prompt_text(prompt), add_special_tokens=False)["input_ids"]

    # --- generation ----------------------------------------------------------------------------

    @torch.no_grad()
    def sample_ids(
        self, prompt_ids: Sequence[Sequence[int]], sampling: Sampling, *, n: int = 1, seed: int | None = None
    ) -> list[list[list[int]]]:
        """`n` completions per prompt given as token ids: the new token ids exactly as sampled.

        The prompt (e.g. a templated question plus a partial answer) is continued; left padding, the
        padding after a finished sequence and its final EOS are removed, nothing else: no decoding
        and re-encoding, so the ids are the tokens whose log-probs the loss should score. With
        `sampling.stop`, generation stops once a stop string has been generated, and its tokens
        are kept (`generate_ids` cuts the text before it). With `sampling.stop_at_answer`, a sequence
        stops at the end of its first `#### N` line and its ids end there (`cut_after_answer`).

        Greedy when `sampling.greedy` (then each prompt is decoded once and its answer repeated n
        times, as vLLM's n greedy samples are identical). A seed makes sampling reproducible
        without touching the caller's global RNG state.
        """
        if n < 1:
            raise ValueError("n must be >= 1")
        batch_size = self.generation_batch_size
        stop = list(sampling.stop)
        per_prompt = 1 if sampling.greedy else n  # greedy has one answer per prompt: decode it once
        eos = self._eos_ids()
        pad = self.tokenizer.pad_token_id
        results: list[list[list[int]]] = []

        def stopping(prompt_length: int) -> StoppingCriteriaList | None:
            return (
                StoppingCriteriaList([_AnswerLineStop(self.tokenizer, prompt_length)])
                if sampling.stop_at_answer
                else None
            )

        devices = [self.device] if self.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):
            if seed is not None:
                torch.manual_seed(seed)
            for start in range(0, len(prompt_ids), batch_size):
                chunk = prompt_ids[start : start + batch_size]
                batch = self._left_padded([list(ids) for ids in chunk])
                output = self.model.generate(
                    **batch,
                    max_new_tokens=sampling.max_new_tokens,
                    do_sample=not sampling.greedy,
                    temperature=None if sampling.greedy else sampling.temperature,
                    top_p=None if sampling.greedy else sampling.top_p,
                    top_k=None,
                    num_return_sequences=per_prompt,
                    pad_token_id=pad,
                    stop_strings=stop or None,
                    tokenizer=self.tokenizer if stop else None,
                    stopping_criteria=stopping(batch["input_ids"].shape[1]),
                )
                rows = [_generated(row, eos, pad) for row in output[:, batch["input_ids"].shape[1] :].tolist()]
                if sampling.stop_at_answer:
                    rows = [cut_after_answer(row, self.tokenizer.decode) for row in rows]
                for i in range(len(chunk)):
                    group = rows[i * per_prompt : (i + 1) * per_prompt]
                    results.append([list(ids) for _ in range(n // per_prompt) for ids in group])
        return results

    def _eos_ids(self) -> frozenset[int]:
        """The token ids that end a sequence in `model.generate` (the generation config's, else the tokenizer's)."""
        config = getattr(self.model, "generation_config", None)
        eos = getattr(config, "eos_token_id", None)
        if eos is None:
            eos = self.tokenizer.eos_token_id
        if eos is None:
            return frozenset()
        return frozenset([eos] if isinstance(eos, int) else eos)

    def _left_padded(self, ids: list[list[int]]) -> dict[str, torch.Tensor]:
        width = max(len(x) for x in ids)
        pad = self.tokenizer.pad_token_id
        input_ids = torch.tensor([[pad] * (width - len(x)) + x for x in ids], device=self.device)
        mask = torch.tensor([[0] * (width - len(x)) + [1] * len(x) for x in ids], device=self.device)
        return {"input_ids": input_ids, "attention_mask": mask}

    # --- log-probs -----------------------------------------------------------------------------

    @torch.no_grad()
    def completion_logprobs(
        self,
        prompts: Sequence[Prompt],
        completions: Sequence[str],
        *,
        temperature: float = 1.0,
        max_batch_tokens: int = 4096,
    ) -> list[torch.Tensor]:
        """Per-token log-probs (fp32, on CPU) of each completion's tokens given its templated prompt.

        log p(token) comes from the logits divided by `temperature` (`token_logprobs`). Prompt
        tokens are excluded. Completions are grouped by prompt, sorted by length and packed into
        right-padded batches of at most `max_batch_tokens` tokens, so padding is small and never
        precedes a real token (causal attention makes the result equal to scoring one pair at a
        time). The prompt is run once per batch, and the LM head only where a completion token is
        predicted.
        """
        if len(prompts) != len(completions):
            raise ValueError(f"{len(prompts)} prompts but {len(completions)} completions")
        prompt_ids = [self.prompt_ids(p) for p in prompts]
        completion_ids = [self.tokenizer(c, add_special_tokens=False)["input_ids"] for c in completions]
        return self.token_logprobs(
            prompt_ids, completion_ids, temperature=temperature, max_batch_tokens=max_batch_tokens
        )

    def token_logprobs(
        self,
        prompt_ids: Sequence[Sequence[int]],
        completion_ids: Sequence[Sequence[int]],
        *,
        temperature: float = 1.0,
        max_batch_tokens: int = 4096,
    ) -> list[torch.Tensor]:
        """`completion_logprobs` on token ids; runs with whatever grad mode the caller set.

        log p(token) = log_softmax(logits / temperature)[token], as TRL's GRPOTrainer computes it
        with its sampling temperature: the policy's log-probs for a ratio or a KL must be taken at
        the temperature its tokens were sampled at (1.0 is the model's own distribution). top_p is
        not applied (as in TRL): the truncated distribution has no log-prob for the tokens it cut.
        `temperature` must be > 0.

        Completions of the same prompt (a question's rollouts, a reference solution) share one
        forward pass over the prompt: its KV cache is computed once and repeated across the batch.
        """
        if not temperature > 0:
            raise ValueError(f"temperature must be > 0 to score log-probs, not {temperature}")
        if len(prompt_ids) != len(completion_ids):
            raise ValueError(f"{len(prompt_ids)} prompts but {len(completion_ids)} completions")
        out = [torch.empty(0) for _ in completion_ids]
        by_prompt: dict[tuple[int, ...], list[int]] = {}
        for i, completion in enumerate(completion_ids):
            if completion:
                by_prompt.setdefault(tuple(prompt_ids[i]), []).append(i)
        for prompt, members in by_prompt.items():
            if not prompt:
                raise ValueError("a prompt must have at least one token")
            members.sort(key=lambda i: -len(completion_ids[i]))
            sizes = {i: len(prompt) + len(completion_ids[i]) for i in members}
            for batch in _pack(members, sizes, max_batch_tokens):
                scored = self._score_shared_prompt(list(prompt), [list(completion_ids[i]) for i in batch], temperature)
                for i, logprobs in zip(batch, scored, strict=True):
                    out[i] = logprobs
        return out

    def _score_shared_prompt(
        self, prompt: list[int], completions: list[list[int]], temperature: float
    ) -> list[torch.Tensor]:
        backbone, batch = self._backbone(), len(completions)
        prefix = backbone(input_ids=torch.tensor([prompt], device=self.device), use_cache=True)
        cache = prefix.cache
        cache.batch_repeat_interleave(batch)
        width, pad = max(len(c) for c in completions), self.tokenizer.pad_token_id
        input_ids = torch.tensor([c + [pad] * (width - len(c)) for c in completions], device=self.device)
        mask = torch.tensor([[1] * (len(prompt) + len(c)) + [0] * (width - len(c)) for c in completions])
        positions = torch.arange(len(prompt), len(prompt) + width, device=self.device).expand(batch, -1)
        hidden = backbone(
            input_ids=input_ids, attention_mask=mask.to(self.device), position_ids=positions, cache=cache
        ).last_hidden_state
        # Position t predicts token t+1: the prompt's last state predicts each completion's first token.
        first = prefix.last_hidden_state[:, -1:].expand(batch, 1, -1)
        predictors = torch.cat([first, hidden[:, :-1]], dim=1)  # predictors[b, j] predicts completion token j
        rows = torch.cat([torch.full((len(c),), b) for b, c in enumerate(completions)]).to(self.device)
        cols = torch.cat([torch.arange(len(c)) for c in completions]).to(self.device)
        targets = torch.tensor([t for c in completions for t in c], device=self.device)
        head = self.model.get_output_embeddings()
        logprobs = _head_logprobs(head, predictors[rows, cols], targets, temperature=temperature)
        return list(logprobs.cpu().split([len(c) for c in completions]))

    def _backbone(self) -> torch.nn.Module:
        base = self.model.get_base_model() if self.has_adapter else self.model
        return base.get_decoder()

    # --- reference and adapters ----------------------------------------------------------------

    @contextmanager
    def reference(self) -> Iterator[StudentModel]:
        """The base model (adapter disabled), exactly and without a copy."""
        if not self.has_adapter:
            yield self
            return
        with self.model.disable_adapter():
            yield self

    def save_adapter(self, directory: Path) -> None:
        """Write the LoRA adapter in PEFT format (adapter_config.json + adapter_model.safetensors)."""
        if not self.has_adapter:
            raise ValueError("this student has no LoRA adapter to save")
        self.model.save_pretrained(str(directory), safe_serialization=True)

    def load_adapter(self, directory: Path) -> None:
        """Load PEFT adapter weights (safetensors) saved by `save_adapter` into the current adapter."""
        if not self.has_adapter:
            raise ValueError("this student has no LoRA adapter to load into")
        directory = Path(directory)
        if not (directory / "adapter_model.safetensors").is_file():
            raise FileNotFoundError(f"{directory}: no adapter_model.safetensors")
        weights = load_peft_weights(str(directory), device=str(self.device))
        result = set_peft_model_state_dict(self.model, weights)
        unexpected = [k for k in result.unexpected_keys if "lora_" in k]
        if unexpected:
            raise ValueError(f"{directory}: adapter does not fit this model (e.g. {unexpected[0]})")


def _head_logprobs(
    head: torch.nn.Module, hidden: torch.Tensor, targets: torch.Tensor, *, temperature: float = 1.0, chunk: int = 256
) -> torch.Tensor:
    """log p(target) for rows of `hidden` [N, H] -> [N] fp32, the vocabulary handled `chunk` rows at a time.

    p is the softmax of logits / temperature (the sampling distribution before top_p, as TRL scores it).
    Never materialises [N, vocab] logits (128k columns for Llama 3), nor a full log_softmax:
    log p = logit[target] - logsumexp(logits), in fp32 whatever the model dtype.
    """
    out = []
    for start in range(0, len(hidden), chunk):
        logits = head(hidden[start : start + chunk]).float()
        if temperature != 1.0:
            logits = logits / temperature
        target = targets[start : start + chunk, None]
        out.append(logits.gather(-1, target).squeeze(-1) - logits.logsumexp(-1))
    return torch.cat(out) if out else torch.empty(0, device=hidden.device)


class _AnswerLineStop(StoppingCriteria):
    """Stops each sequence once its new text holds a whole `#### N` line (`Sampling.stop_at_answer`)."""

    def __init__(self, tokenizer: PreTrainedTokenizerBase, prompt_length: int) -> None:
        self.tokenizer = tokenizer
        self.prompt_length = prompt_length

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor, **kwargs: object) -> torch.BoolTensor:
        texts = self.tokenizer.batch_decode(input_ids[:, self.prompt_length :], skip_special_tokens=True)
        return torch.tensor([answer_line_end(t) is not None for t in texts], device=input_ids.device)


def _generated(row: list[int], eos: frozenset[int], pad: int | None) -> list[int]:
    """The tokens a sequence generated: up to its first EOS (dropped, with the padding after it).

    A sequence that ended on a stop string is padded after it with `pad`; when that is not an EOS
    id, trailing pads are dropped too.
    """
    for i, token in enumerate(row):
        if token in eos:
            return row[:i]
    end = len(row)
    if pad is not None and pad not in eos:
        while end and row[end - 1] == pad:
            end -= 1
    return row[:end]


def _pack(order: list[int], sizes: dict[int, int], max_batch_tokens: int) -> Iterator[list[int]]:
    """Consecutive groups of `order` whose padded size (count x largest) fits the token budget."""
    batch: list[int] = []
    for i in order:  # largest first, so the first member sets the padded width
        if batch and (len(batch) + 1) * sizes[batch[0]] > max_batch_tokens:
            yield batch
            batch = []
        batch.append(i)
    if batch:
        yield batch
