"""AlphaZero-style MCTS + GRPO training of small LLMs on GSM8K, and a verifiers environment."""

__version__ = "0.1.0"
