"""`redact`: what an error message or a written file may never contain."""

from __future__ import annotations

from alphazero_llm.redact import MASK, redact, secret_values


def test_secret_environment_values_are_replaced_by_their_variable_name() -> None:
    env = {"OPENROUTER_API_KEY": "or-abcdefgh12345", "HOME": "/home/someone-long", "HF_TOKEN": "hf_0123456789"}
    text = "401 from openrouter for key or-abcdefgh12345 (hf_0123456789), home /home/someone-long"
    assert redact(text, env) == "401 from openrouter for key $OPENROUTER_API_KEY ($HF_TOKEN), home /home/someone-long"
    assert dict(secret_values(env)) == {"OPENROUTER_API_KEY": "or-abcdefgh12345", "HF_TOKEN": "hf_0123456789"}


def test_short_values_are_not_secrets() -> None:
    # A variable like MY_KEY=1 would otherwise mask every "1" in the message.
    assert redact("step 1 of 1", {"MY_KEY": "1"}) == "step 1 of 1"


def test_typed_keys_are_masked() -> None:
    assert redact("--teacher name=x,api_key=hunter2hunter2,model=m", {}) == f"--teacher name=x,api_key={MASK},model=m"
    assert redact("API-KEY: abc", {}) == f"API-KEY: {MASK}"
    shaped = "sk-" + "or-v1-" + "0123456789abcdef"  # a provider-shaped fake, assembled so no scanner mistakes it
    assert redact(f"got '{shaped}'", {}) == f"got '{MASK}'"
    assert redact("the task-list and ask-me are words", {}) == "the task-list and ask-me are words"
