"""verifiers entry point: `vf-eval alphazero-llm-trainer` imports this module.

Wiring only. verifiers 0.3's `vf-eval` calls `load_environment()` (`alphazero_llm.rubric`); verifiers 0.4's
`vf-eval` (and 0.3.1's v1 `eval`) loads the taskset exported here (`alphazero_llm.taskset`).
"""

from alphazero_llm.taskset import AlphazeroTaskset


def load_environment(**env_args):
    """The verifiers 0.3 environment (a `SingleTurnEnv`); 0.4 has no such API and uses `AlphazeroTaskset`."""
    from alphazero_llm.rubric import load_environment as load

    return load(**env_args)


__all__ = ["AlphazeroTaskset", "load_environment"]
