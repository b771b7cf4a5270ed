"""StudentModel on the real SmolLM2-135M-Instruct (CPU): loading, sampling, log-probs, reference, adapters."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from alphazero_llm.config import load_config
from alphazero_llm.models.embedded import embedded_gguf_path
from alphazero_llm.models.locate import resolve_model_path
from alphazero_llm.models.sampling import Sampling
from alphazero_llm.models.student import FourBitOnCPUError, StudentModel, StudentSpec

MODELS = load_config().models
PROMPTS = [
    "What is 7 * 13?",
    [{"role": "system", "content": "Answer with #### N."}, {"role": "user", "content": "A farmer has 3 cows."}],
    "Hi",
]
COMPLETIONS = ["7 * 13 = 91\n#### 91", "He has 3 cows, so the answer is 3.\n#### 3", "Hello! How can I help you today?"]


def test_4bit_on_cpu_is_refused_with_the_reason():
    with pytest.raises(FourBitOnCPUError, match="silently wrong"):
        StudentModel.load(StudentSpec(name="embedded", device="cpu", load_in_4bit=True), MODELS)


def test_hub_ids_pass_through_and_missing_gguf_is_named(tmp_path: Path):
    assert resolve_model_path("meta-llama/Llama-3.2-3B-Instruct") == "meta-llama/Llama-3.2-3B-Instruct"
    assert resolve_model_path(str(tmp_path)) == str(tmp_path)
    with pytest.raises(FileNotFoundError, match=r"missing\.gguf: GGUF file not found"):
        resolve_model_path(str(tmp_path / "missing.gguf"))


def test_sampling_is_validated_and_names_the_field():
    sampling = Sampling(max_new_tokens=8, temperature=0.7, top_p=0.95, stop=["\n", "", "####"])  # type: ignore[arg-type]
    assert sampling.stop == ("\n", "####")  # a tuple (hashable), empty strings dropped
    assert not sampling.greedy
    greedy = Sampling.greedy_decoding(16, stop=["\n"])
    assert greedy == Sampling(16, temperature=0.0, top_p=1.0, stop=("\n",)) and greedy.greedy
    for kwargs, field in [
        ({"max_new_tokens": 0}, "max_new_tokens"),
        ({"temperature": -0.1}, "temperature"),
        ({"temperature": float("nan")}, "temperature"),
        ({"top_p": 0.0}, "top_p"),
        ({"top_p": 1.5}, "top_p"),
        ({"stop": "\n"}, "stop"),
    ]:
        with pytest.raises(ValueError, match=field):
            Sampling(**{"max_new_tokens": 8, "temperature": 0.7, "top_p": 0.95, **kwargs})
    with pytest.raises(AttributeError):
        sampling.temperature = 1.0  # type: ignore[misc]


@pytest.fixture(scope="module")
def student(smollm_dir: Path) -> StudentModel:
    """fp32 with LoRA, so that batched and one-by-one results can be compared to 1e-4."""
    return StudentModel.load(StudentSpec(name=str(smollm_dir), device="cpu", dtype="float32"), MODELS)


@pytest.mark.slow
def test_lora_matches_the_config(student: StudentModel):
    assert student.has_adapter
    lora = student.model.peft_config["default"]
    assert (lora.r, lora.lora_alpha) == (32, 32)
    assert set(lora.target_modules) == set(MODELS.lora.target_modules)
    trainable = [name for name, p in student.model.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in name for name in trainable)
    assert student.model.config.dtype == torch.float32


COUNT = "Count from 1 to 20, one number per line."


@pytest.mark.slow
def test_generate_is_seeded_batched_and_stops(student: StudentModel):
    prompts = PROMPTS[:2]
    sampling = Sampling(max_new_tokens=12, temperature=0.9, top_p=0.95)
    first = student.generate(prompts, sampling, n=3, seed=3)
    again = student.generate(prompts, sampling, n=3, seed=3)
    other = student.generate(prompts, sampling, n=3, seed=4)
    assert len(first) == 2 and all(len(c) == 3 for c in first)
    assert first == again
    assert first != other
    state = torch.random.get_rng_state()
    student.generate(prompts[:1], Sampling(4, temperature=0.9, top_p=0.95), seed=5)
    assert torch.equal(state, torch.random.get_rng_state())  # the caller's RNG is untouched
    greedy = student.generate([COUNT], Sampling.greedy_decoding(40))
    assert [greedy[0] * 2] == student.generate([COUNT], Sampling.greedy_decoding(40), n=2)
    cut = student.generate([COUNT], Sampling.greedy_decoding(40, stop=["\n"]))
    assert "\n" not in cut[0][0]
    assert greedy[0][0].startswith(cut[0][0])
    with pytest.raises(ValueError, match=">= 1"):
        student.generate([COUNT], Sampling.greedy_decoding(4), n=0)


@pytest.mark.slow
def test_sample_ids_are_the_tokens_generated(student: StudentModel):
    prompt_ids = [student.prompt_ids(p) for p in PROMPTS]
    sampling = Sampling(max_new_tokens=16, temperature=0.9, top_p=0.95)
    student.generation_batch_size = 2  # two batches: the second one shorter
    try:
        samples = student.sample_ids(prompt_ids, sampling, n=2, seed=7)
        texts = student.generate_ids(prompt_ids, sampling, n=2, seed=7)
    finally:
        student.generation_batch_size = 8
    assert [len(group) for group in samples] == [2, 2, 2]
    decoded = [student.tokenizer.batch_decode(group, skip_special_tokens=True) for group in samples]
    assert decoded == texts
    eos, pad = student._eos_ids(), student.tokenizer.pad_token_id
    flat = [(p, ids) for p, group in zip(prompt_ids, samples, strict=True) for ids in group]
    assert all(ids and not (set(ids) & eos) and ids[0] != pad for _, ids in flat)  # no padding, no EOS
    # Scored as sampled: one finite log-prob per token, at the sampling temperature.
    scored = student.token_logprobs([p for p, _ in flat], [ids for _, ids in flat], temperature=0.9)
    for (_, ids), logprobs in zip(flat, scored, strict=True):
        assert logprobs.shape == (len(ids),) and torch.isfinite(logprobs).all()

    # Greedy ids re-fed to the model: each is the argmax after the prompt and the ids before it.
    (count,) = [student.prompt_ids(COUNT)]
    ((greedy, again),) = student.sample_ids([count], Sampling.greedy_decoding(24), n=2)
    assert greedy == again and greedy is not again
    with torch.no_grad():
        logits = student.model(input_ids=torch.tensor([count + greedy])).logits[0]
    assert logits[len(count) - 1 : -1].argmax(-1).tolist() == greedy
    # With a stop string, the ids run to the end of the stop string (its tokens kept) and no further.
    ((stopped,),) = student.sample_ids([count], Sampling.greedy_decoding(24, stop=["\n"]))
    assert greedy[: len(stopped)] == stopped and len(stopped) < len(greedy)
    text = student.tokenizer.decode(stopped)
    assert text.endswith("\n") and "\n" not in text[:-1]
    assert student.generate_ids([count], Sampling.greedy_decoding(24, stop=["\n"])) == [[text[:-1]]]


@pytest.mark.slow
def test_token_logprobs_are_taken_at_the_temperature(student: StudentModel):
    prompt_ids = [student.prompt_ids(p) for p in PROMPTS]
    completion_ids = [student.tokenizer(c, add_special_tokens=False)["input_ids"] for c in COMPLETIONS]
    by_temperature = {}
    for temperature in (0.7, 1.0):
        scored = student.token_logprobs(prompt_ids, completion_ids, temperature=temperature)
        for prompt, ids, logprobs in zip(prompt_ids, completion_ids, scored, strict=True):
            # Independently: one plain forward of the whole sequence, logits / T, log_softmax, gather.
            with torch.no_grad():
                logits = student.model(input_ids=torch.tensor([prompt + ids])).logits[0].float()
            expected = (logits / temperature).log_softmax(-1)[len(prompt) - 1 : -1]
            expected = expected.gather(-1, torch.tensor(ids)[:, None])[:, 0]
            assert torch.allclose(logprobs, expected, atol=1e-4), (temperature, (logprobs - expected).abs().max())
        by_temperature[temperature] = scored
        texts = student.completion_logprobs(PROMPTS, COMPLETIONS, temperature=temperature)
        assert all(torch.equal(a, b) for a, b in zip(texts, scored, strict=True))
    assert all(not torch.allclose(a, b, atol=1e-3) for a, b in zip(*by_temperature.values(), strict=True))
    for temperature in (0.0, -1.0):
        with pytest.raises(ValueError, match="temperature must be > 0"):
            student.token_logprobs(prompt_ids, completion_ids, temperature=temperature)
        with pytest.raises(ValueError, match="temperature must be > 0"):
            student.completion_logprobs(PROMPTS, COMPLETIONS, temperature=temperature)


@pytest.mark.slow
def test_completion_logprobs_exclude_the_prompt_and_batch_exactly(student: StudentModel):
    batched = student.completion_logprobs(PROMPTS, COMPLETIONS)
    for prompt, completion, logprobs in zip(PROMPTS, COMPLETIONS, batched, strict=True):
        ids = student.tokenizer(completion, add_special_tokens=False)["input_ids"]
        assert logprobs.shape == (len(ids),)
        (alone,) = student.completion_logprobs([prompt], [completion])
        assert torch.allclose(logprobs, alone, atol=1e-4), (logprobs - alone).abs().max()
        # The textbook computation: full logits of prompt + completion, read at the completion.
        prompt_ids = student.prompt_ids(prompt)
        with torch.no_grad():
            logits = student.model(input_ids=torch.tensor([prompt_ids + ids])).logits[0].float()
        expected = logits.log_softmax(-1)[len(prompt_ids) - 1 : -1].gather(-1, torch.tensor(ids)[:, None])[:, 0]
        assert torch.allclose(logprobs, expected, atol=1e-4)
    # Tiny token budgets force one pair per batch; the result must not change.
    assert all(
        torch.allclose(a, b, atol=1e-4)
        for a, b in zip(batched, student.completion_logprobs(PROMPTS, COMPLETIONS, max_batch_tokens=1), strict=True)
    )
    assert student.completion_logprobs(["Hi"], [""])[0].numel() == 0


@pytest.mark.slow
def test_completions_sharing_a_prompt_equal_one_by_one(student: StudentModel):
    """The shared-prompt path (one prompt pass, KV cache repeated, padded completions) is exact."""
    prompt = PROMPTS[1]
    completions = ["3", "He has 3 cows.\n#### 3", "", "Cows: 3. Each cow has 4 legs, so 12 legs in all.\n#### 12"]
    shared = student.completion_logprobs([prompt] * 4, completions)
    for completion, logprobs in zip(completions, shared, strict=True):
        (alone,) = student.completion_logprobs([prompt], [completion])
        assert logprobs.shape == alone.shape
        assert torch.allclose(logprobs, alone, atol=1e-4), (logprobs - alone).abs().max()
    mixed = student.completion_logprobs([prompt, PROMPTS[0], prompt], [completions[1], COMPLETIONS[0], completions[3]])
    for a, b in zip(
        mixed, [shared[1], student.completion_logprobs([PROMPTS[0]], [COMPLETIONS[0]])[0], shared[3]], strict=True
    ):
        assert torch.allclose(a, b, atol=1e-4)


def perturb_adapter(student: StudentModel, seed: int) -> None:
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in student.model.named_parameters():
            if "lora_B" in name:
                param.copy_(torch.randn(param.shape, generator=generator) * 0.02)


@pytest.mark.slow
def test_reference_is_the_base_model_without_a_copy(student: StudentModel, smollm_dir: Path):
    base = StudentModel.load(StudentSpec(name=str(smollm_dir), device="cpu", dtype="float32", lora=False), MODELS)
    expected = base.completion_logprobs(PROMPTS, COMPLETIONS)
    perturb_adapter(student, seed=0)
    adapted = student.completion_logprobs(PROMPTS, COMPLETIONS)
    params_before = {id(p) for p in student.model.parameters()}
    with student.reference() as reference:
        referenced = reference.completion_logprobs(PROMPTS, COMPLETIONS)
    assert {id(p) for p in student.model.parameters()} == params_before  # same tensors, no copy
    assert not all(torch.allclose(a, e, atol=1e-3) for a, e in zip(adapted, expected, strict=True))
    for r, e in zip(referenced, expected, strict=True):
        assert torch.allclose(r, e, atol=1e-5)
    after = student.completion_logprobs(PROMPTS, COMPLETIONS)  # the adapter is back on
    assert all(torch.equal(a, b) for a, b in zip(adapted, after, strict=True))


@pytest.mark.slow
def test_adapter_round_trip_in_peft_format(student: StudentModel, smollm_dir: Path, tmp_path: Path):
    perturb_adapter(student, seed=1)
    expected = student.completion_logprobs(PROMPTS, COMPLETIONS)
    student.save_adapter(tmp_path / "adapter")
    assert {"adapter_config.json", "adapter_model.safetensors"} <= {p.name for p in (tmp_path / "adapter").iterdir()}

    fresh = StudentModel.load(StudentSpec(name=str(smollm_dir), device="cpu", dtype="float32"), MODELS)
    fresh.load_adapter(tmp_path / "adapter")
    for a, b in zip(expected, fresh.completion_logprobs(PROMPTS, COMPLETIONS), strict=True):
        assert torch.allclose(a, b, atol=1e-5)

    # Plain PEFT (as vLLM's LoRA loader expects) reads the same directory.
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    peft_model = PeftModel.from_pretrained(
        AutoModelForCausalLM.from_pretrained(smollm_dir, dtype=torch.float32), tmp_path / "adapter"
    )
    reloaded = StudentModel(peft_model, fresh.tokenizer).completion_logprobs(PROMPTS, COMPLETIONS)
    for a, b in zip(expected, reloaded, strict=True):
        assert torch.allclose(a, b, atol=1e-5)

    with pytest.raises(FileNotFoundError, match=r"no adapter_model\.safetensors"):
        fresh.load_adapter(tmp_path)


@pytest.mark.slow
def test_loads_from_a_gguf_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("ALPHAZERO_LLM_CACHE", str(tmp_path))
    gguf = embedded_gguf_path()
    student = StudentModel.load(StudentSpec(name=str(gguf), device="cpu", lora=False), MODELS)
    converted = Path(resolve_model_path(str(gguf)))
    assert converted.parent == tmp_path and (converted / "model.safetensors").is_file()
    assert student.generate(["What is 2 + 3?"], Sampling.greedy_decoding(8))[0][0].strip()
