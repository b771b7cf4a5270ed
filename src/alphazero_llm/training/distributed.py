"""Data-parallel training over processes: who this process is, and the few collectives the run needs.

AlphaZero's self-play workers, for GRPO: every rank searches its own questions and computes its own loss;
the gradients are averaged before each optimiser step, so every rank holds the same adapter. Launch with
`torchrun --nproc-per-node N train_vllm.py ...` or `accelerate launch --num_processes N train_vllm.py ...`:
both set RANK, WORLD_SIZE, LOCAL_RANK and the rendezvous address in the environment, which is all this module
reads. Without a launcher (WORLD_SIZE unset or 1) nothing here talks to anyone and the run is one process.

Backend: gloo on CPU, NCCL on CUDA (one GPU per rank: `cuda:LOCAL_RANK`). Every collective waits at most the
process group's timeout (training.yaml `run.dist_timeout_s`); a rank that dies is noticed sooner by the launcher,
which stops the others (torchrun's and accelerate's default).
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, Any

import torch

if TYPE_CHECKING:
    from alphazero_llm.training.settings import RunSettings

logger = logging.getLogger(__name__)


class RanksDiverged(RuntimeError):
    """The ranks' adapters differ after an optimiser step: the gradients were not averaged alike."""


@dataclass(frozen=True)
class Dist:
    """This process's place in the run: rank `rank` of `world_size` (`local_rank` on its machine)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    def __post_init__(self) -> None:
        if not 0 <= self.rank < self.world_size:
            raise ValueError(f"rank {self.rank} is not in a world of {self.world_size}")

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def from_environment(env: dict[str, str] | None = None) -> Dist:
    """The launcher's RANK / WORLD_SIZE / LOCAL_RANK (torchrun and accelerate set them); one process without."""
    env = dict(os.environ) if env is None else env
    world = int(env.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Dist()
    return Dist(rank=int(env["RANK"]), world_size=world, local_rank=int(env.get("LOCAL_RANK", env["RANK"])))


def init(device_type: str, timeout_s: float) -> Dist:
    """Join the launcher's process group (gloo on CPU, NCCL on CUDA); a no-op for one process."""
    dist = from_environment()
    if not dist.enabled:
        return dist
    if device_type == "cuda":
        torch.cuda.set_device(dist.local_rank)
    backend = "nccl" if device_type == "cuda" else "gloo"
    if not torch.distributed.is_initialized():
        torch.distributed.init_process_group(backend, timeout=timedelta(seconds=timeout_s))
    logger.info("rank %d of %d (local rank %d), backend %s", dist.rank, dist.world_size, dist.local_rank, backend)
    return dist


def share_rate_limits(settings: RunSettings, world_size: int) -> RunSettings:
    """Each provider's rate limit is the whole run's budget: every rank gets 1/world_size of its requests per
    minute (and of its burst, at least 1)."""
    if world_size <= 1:
        return settings
    client = settings.config.teachers.client
    limits = {
        provider: dataclasses.replace(
            limit, requests_per_minute=limit.requests_per_minute / world_size, burst=max(1, limit.burst // world_size)
        )
        for provider, limit in client.rate_limits.items()
    }
    teachers = dataclasses.replace(settings.config.teachers, client=dataclasses.replace(client, rate_limits=limits))
    return dataclasses.replace(settings, config=dataclasses.replace(settings.config, teachers=teachers))


def per_rank(name: str, dist: Dist) -> str:
    """`name`, suffixed with the rank when several ranks would write the same path."""
    return f"{name}.rank{dist.rank}" if dist.enabled else name


def shutdown(dist: Dist) -> None:
    if dist.enabled and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()


def all_gather(value: Any, dist: Dist) -> list[Any]:
    """Every rank's `value` (any picklable object), in rank order, on every rank."""
    if not dist.enabled:
        return [value]
    out: list[Any] = [None] * dist.world_size
    torch.distributed.all_gather_object(out, value)
    return out


def any_rank(flag: bool, dist: Dist) -> bool:
    """True on every rank when `flag` is true on some rank."""
    return any(all_gather(bool(flag), dist))


def average_gradients(params: Iterable[torch.Tensor], dist: Dist, scale: float) -> None:
    """Replace each parameter's gradient by `scale` x the sum of the ranks' gradients (one flat all-reduce).

    A parameter without a gradient on this rank (a rank that ran no example this round) counts as zeros.
    """
    params = [p for p in params if p.requires_grad]
    if not params:
        return
    grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
    if dist.enabled:
        flat = torch.cat([g.reshape(-1).to(torch.float32) for g in grads])
        torch.distributed.all_reduce(flat, op=torch.distributed.ReduceOp.SUM)
        offset = 0
        for p, g in zip(params, grads, strict=True):
            n = g.numel()
            p.grad = flat[offset : offset + n].view_as(g).to(g.dtype).mul_(scale)
            offset += n
    elif scale != 1.0:
        for p, g in zip(params, grads, strict=True):
            p.grad = g.mul_(scale)


def digest(tensors: Sequence[torch.Tensor]) -> str:
    """SHA-256 of the tensors' bytes, in order: equal digests mean byte-identical tensors."""
    h = hashlib.sha256()
    for t in tensors:
        h.update(t.detach().to("cpu").contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def check_identical(tensors: Sequence[torch.Tensor], dist: Dist, when: str = "after an optimiser step") -> list[str]:
    """Every rank's digest of `tensors`; raises `RanksDiverged`, naming the ranks, when any differs from rank 0's."""
    digests = all_gather(digest(tensors), dist)
    differ = [rank for rank, d in enumerate(digests) if d != digests[0]]
    if differ:
        raise RanksDiverged(
            f"the adapter of rank(s) {differ} differs from rank 0's {when} "
            f"(sha256 {[d[:12] for d in digests]}); the ranks no longer train one model, stopping"
        )
    return digests
