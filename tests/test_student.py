"""StudentModel on the real SmolLM2-135M-Instruct (CPU): loading, generate, log-probs, reference, adapters."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from alphazero_llm.config import load_config
from alphazero_llm.models.embedded import embedded_gguf_path
from alphazero_llm.models.student import (
    FourBitOnCPUError,
    StudentModel,
    StudentSpec,
    resolve_model_path,
)

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


@pytest.mark.slow
def test_generate_is_seeded_batched_and_stops(student: StudentModel):
    prompts = PROMPTS[:2]
    first = student.generate(prompts, n=3, max_new_tokens=12, temperature=0.9, seed=3)
    again = student.generate(prompts, n=3, max_new_tokens=12, temperature=0.9, seed=3)
    other = student.generate(prompts, n=3, max_new_tokens=12, temperature=0.9, seed=4)
    assert len(first) == 2 and all(len(c) == 3 for c in first)
    assert first == again
    assert first != other
    state = torch.random.get_rng_state()
    student.generate(prompts[:1], max_new_tokens=4, seed=5)
    assert torch.equal(state, torch.random.get_rng_state())  # the caller's RNG is untouched
    greedy = student.generate(["Count from 1 to 20, one number per line."], max_new_tokens=40, temperature=0.0)
    assert [greedy[0] * 2] == student.generate(
        ["Count from 1 to 20, one number per line."], n=2, max_new_tokens=40, temperature=0
    )
    cut = student.generate(["Count from 1 to 20, one number per line."], max_new_tokens=40, temperature=0, stop=["\n"])
    assert "\n" not in cut[0][0]
    assert greedy[0][0].startswith(cut[0][0])


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
    assert student.generate(["What is 2 + 3?"], max_new_tokens=8, temperature=0)[0][0].strip()


@pytest.mark.slow
def test_student_steps_and_rollouts_continue_its_own_answer(student: StudentModel):
    """The search asks the student as the policy the loss trains: the question, then its answer so far."""
    import asyncio

    from alphazero_llm.mcts.proposers import StudentAdapter

    system = "Solve step by step. Format your final answer as: #### [number]"
    question = "Tom has 3 apples and buys 4 more. How many apples does he have?"
    messages = [{"role": "system", "content": system}, {"role": "user", "content": question}]
    adapter = StudentAdapter(
        student, max_new_tokens=40, temperature=0.0, top_p=1.0, seed=0, system_prompt=system, rollout_tokens=60
    )
    answer = student.generate([messages], max_new_tokens=60, temperature=0.0)[0][0]
    first = next(line.strip() for line in answer.splitlines() if line.strip())
    (step,) = asyncio.run(adapter.propose(question, "", "right", 1))
    assert step.text == first  # greedy: the first line of the student's own answer, verbatim
    assert asyncio.run(adapter.finish(question, "")) == answer.strip()
    # After a partial solution the context is the question's template, the solution and a line break.
    partial = "He starts with 3 apples."
    ids = adapter._answer_ids(question, partial)
    assert (
        ids == student.prompt_ids(messages) + student.tokenizer(partial + "\n", add_special_tokens=False)["input_ids"]
    )
    (after,) = asyncio.run(adapter.propose(question, partial, "right", 1))
    continuation = student.generate_ids([ids], max_new_tokens=40, temperature=0.0)[0][0]
    assert after.text == next(line.strip() for line in continuation.splitlines() if line.strip())
