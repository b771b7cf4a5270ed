"""AdamW (8-bit on CUDA, torch on CPU) and the warmup + cosine learning-rate schedule."""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable

import torch

from alphazero_llm.config import OptimizerConfig
from alphazero_llm.models.student import require_bitsandbytes

logger = logging.getLogger(__name__)


def lr_factor(step: int, warmup_steps: int, total_steps: int) -> float:
    """Multiplier of the base LR after `step` optimizer steps: linear warmup, then cosine decay to 0."""
    if warmup_steps > 0 and step < warmup_steps:
        return (step + 1) / warmup_steps
    decay_steps = max(1, total_steps - warmup_steps)
    progress = min(1.0, (step - warmup_steps) / decay_steps)
    return 0.5 * (1.0 + math.cos(math.pi * progress))


def build_optimizer(
    params: Iterable[torch.nn.Parameter], config: OptimizerConfig, device: torch.device
) -> torch.optim.Optimizer:
    """bitsandbytes' 8-bit AdamW on CUDA (states in 8 bit: the memory a 3B LoRA run needs); torch AdamW on CPU."""
    params = [p for p in params if p.requires_grad]
    if not params:
        raise ValueError("no trainable parameters (is the LoRA adapter missing?)")
    if device.type == "cuda":
        require_bitsandbytes("8-bit AdamW on CUDA")
        import bitsandbytes as bnb

        return bnb.optim.AdamW8bit(params, lr=config.learning_rate, weight_decay=config.weight_decay)
    return torch.optim.AdamW(params, lr=config.learning_rate, weight_decay=config.weight_decay)


def build_scheduler(
    optimizer: torch.optim.Optimizer, config: OptimizerConfig, total_steps: int
) -> torch.optim.lr_scheduler.LambdaLR:
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: lr_factor(step, config.warmup_steps, max(1, total_steps))
    )
