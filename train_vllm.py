"""Training entry point: `python train_vllm.py --help`. Wiring only; the work is in alphazero_llm.training."""

import sys

from alphazero_llm.training.cli import main

if __name__ == "__main__":
    sys.exit(main())
