"""verifiers entry point: `vf-eval alphazero-llm-trainer` imports this module.

Wiring only; the environment is built in `alphazero_llm.environment`.
"""

from alphazero_llm.environment import load_environment

__all__ = ["load_environment"]
