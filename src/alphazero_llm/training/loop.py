"""The training run: sample a question, search once, turn its trajectories into one GRPO (or legacy) update.

Per example (one question):
1. `QuestionSampler` picks the question (without replacement, cycling; seeded; checkpointed).
2. `search_fn` runs the MCTS once; every root-to-leaf trajectory with text forms the group.
3. The prompt is the chat-templated question (system prompt + question), the completion the
   trajectory's text (plus EOS for a terminal one, so stopping is learnt). Reference log-probs
   are computed once, before the update, without grad, under the reference policy; all come from
   `StudentModel.token_logprobs` in one dtype. No forward is spent on old log-probs: a group gets
   exactly one gradient pass, with the weights that searched it (the optimiser steps after), so
   the old policy is the current one and its log-probs are the current ones, detached (TRL's
   `num_iterations=1`). The ratio is then 1 and its gradient the policy gradient.
4. GRPO: `group_advantages` of the rewards, `grpo_loss` per micro-batch of `micro_batch_size`
   trajectories, each scaled by its share of the group and by 1/gradient_accumulation_steps, so
   the accumulated gradient is that of the whole group's loss ("bnpo" averages each micro-batch's
   tokens, as TRL does). `grpo.loss_type` picks the normalisation. Legacy: `legacy_loss` likewise.
5. Every `gradient_accumulation_steps` examples: clip to `max_grad_norm`, AdamW step, LR schedule step.
   A NaN/inf loss or gradient norm skips the update (logged); the gradients are dropped, never applied.

Reference policy. With `grpo.update_ref_every` = 0 the reference is the base model with the LoRA
adapter disabled (`StudentModel.reference()`, no copy). With N > 0, every N examples the current
adapter is copied into a second, frozen PEFT adapter named "reference", and reference log-probs are
computed with that adapter active: the KL then anchors the policy to its state N examples ago,
for the cost of one adapter's weights (not a model copy). The snapshot is saved with the checkpoint.

Checkpoints (every `save_every` examples and at the end, `checkpoint.py`) hold the adapter, the
optimiser, the scheduler, the RNG states, the sampler position, the teacher bandit and the metrics;
`resume()` restores them all, so a resumed run repeats a straight run's choices. A process killed
between checkpoints loses only the examples since the last one.
"""

from __future__ import annotations

import logging
import math
import random
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol

import torch

from alphazero_llm.config import TrainingConfig
from alphazero_llm.mcts.evaluate import path_pre
from alphazero_llm.mcts.search import SearchResult, Trajectory
from alphazero_llm.training.checkpoint import (
    CheckpointState,
    capture_rng,
    find_latest,
    load_checkpoint,
    restore_rng,
    save_checkpoint,
)
from alphazero_llm.training.grpo import group_advantages, grpo_loss, legacy_loss
from alphazero_llm.training.metrics import MetricsLog
from alphazero_llm.training.optim import build_optimizer, build_scheduler
from alphazero_llm.training.sampler import QuestionSampler

logger = logging.getLogger(__name__)

REFERENCE_ADAPTER = "reference"

# (question, gold, rng, example step) -> the finished search. The step lets a caller seed per-example
# generators, so that a resumed run draws what a straight run draws.
SearchFn = Callable[[str, str, random.Random, int], SearchResult]


class BanditState(Protocol):
    def state_dict(self) -> dict[str, Any]: ...
    def load_state_dict(self, state: Mapping[str, Any]) -> None: ...


@dataclass(frozen=True)
class LoopSettings:
    num_examples: int
    checkpoint_dir: Path
    save_every: int
    log_interval: int
    loss: Literal["grpo", "legacy"]
    seed: int
    system_prompt: str
    max_completion_tokens: int = 512  # trajectories are cut to this many tokens (memory bound)
    keep_last: int | None = 3


@dataclass(frozen=True)
class Batch:
    """One question's group, tokenised."""

    prompt_ids: list[int]
    completion_ids: list[list[int]]
    rewards: torch.Tensor  # [G]


def pad(rows: Sequence[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-pad 1-D tensors to [B, T]; returns (values, mask). Keeps grad and dtype."""
    width = max(1, max(r.numel() for r in rows))
    values = torch.stack([torch.nn.functional.pad(r, (0, width - r.numel())) for r in rows])
    mask = torch.stack([torch.arange(width) < r.numel() for r in rows]).to(values.dtype)
    return values, mask


def group_stats(result: SearchResult) -> dict[str, Any]:
    """Reward, HRE and PRE statistics of a search's trajectories (the group)."""
    trajs = [t for t in result.trajectories if t.text.strip()]
    rewards = [t.reward for t in trajs]
    nodes = {n.id: n for n in result.root.iter_subtree()}
    pres = [path_pre([n.pre for n in nodes[t.leaf_id].path()[1:]], 1.0) for t in trajs]
    hres = [t.hre for t in trajs if t.hre is not None]
    return {
        "group_size": len(trajs),
        "reward_mean": _mean(rewards),
        "reward_max": max(rewards) if rewards else None,
        "hre_mean": _mean(hres),
        "pre_mean": _mean(pres),
        "best_correct": float(result.best_correct),
        "tree_nodes": result.stats.nodes,
        "tree_depth": result.stats.max_depth,
        "teacher_calls": sum(v for k, v in result.stats.proposer_calls.items() if k.startswith("teachers")),
        "tokens": result.stats.proposer_tokens,
        "search_s": result.stats.wall_time_s,
    }


def _mean(values: Sequence[float]) -> float | None:
    return sum(values) / len(values) if values else None


class ReferencePolicy:
    """The KL reference: the base model (adapter disabled), or a frozen snapshot adapter (module docstring)."""

    def __init__(self, student: Any, update_every: int) -> None:
        self.student = student
        self.update_every = update_every

    @property
    def has_snapshot(self) -> bool:
        return REFERENCE_ADAPTER in getattr(self.student.model, "peft_config", {})

    @contextmanager
    def active(self) -> Iterator[None]:
        if not self.has_snapshot:
            with self.student.reference():
                yield
            return
        model = self.student.model
        model.set_adapter(REFERENCE_ADAPTER)
        try:
            yield
        finally:
            model.set_adapter("default")  # also marks "default" trainable again and the snapshot frozen

    def after_example(self, step: int) -> None:
        if self.update_every > 0 and step % self.update_every == 0:
            self.snapshot()
            logger.info("reference adapter refreshed from the policy at example %d", step)

    def snapshot(self, weights: Mapping[str, torch.Tensor] | None = None) -> None:
        """Copy the current adapter (or `weights`, in PEFT's saved form) into the frozen reference adapter."""
        from peft import get_peft_model_state_dict, set_peft_model_state_dict

        model = self.student.model
        if not self.has_snapshot:
            model.add_adapter(REFERENCE_ADAPTER, model.peft_config["default"])
        source = get_peft_model_state_dict(model, adapter_name="default") if weights is None else weights
        set_peft_model_state_dict(model, dict(source), adapter_name=REFERENCE_ADAPTER)
        for name, param in model.named_parameters():
            if f".{REFERENCE_ADAPTER}." in name:
                param.requires_grad_(False)

    def restore(self, adapter_dir: Path) -> None:
        path = adapter_dir / REFERENCE_ADAPTER
        if (path / "adapter_model.safetensors").is_file():
            from peft.utils import load_peft_weights

            self.snapshot(load_peft_weights(str(path), device=str(self.student.device)))


class Trainer:
    """Holds the run's state (optimiser, schedule, sampler, RNG, metrics) and steps it one example at a time."""

    def __init__(
        self,
        student: Any,
        search_fn: SearchFn,
        rows: Sequence[Mapping[str, Any]],
        config: TrainingConfig,
        settings: LoopSettings,
        *,
        rng: random.Random | None = None,
        bandit: BanditState | None = None,
        metrics: MetricsLog | None = None,
        extra_metrics: Callable[[], Mapping[str, Any]] | None = None,
    ) -> None:
        accumulate = config.optimizer.gradient_accumulation_steps
        if settings.save_every % accumulate:
            # A checkpoint between two accumulated examples would lose their gradients on resume.
            raise ValueError(f"save_every ({settings.save_every}) must be a multiple of gradient_accumulation_steps")
        self.student = student
        self.search_fn = search_fn
        self.rows = rows
        self.config = config
        self.settings = settings
        self.rng = rng if rng is not None else random.Random(settings.seed)
        self.bandit = bandit
        self.extra_metrics = extra_metrics  # per-example values the search function knows (e.g. teacher cost)
        self.sampler = QuestionSampler(len(rows), settings.seed)
        self.optimizer = build_optimizer(student.model.parameters(), config.optimizer, student.device)
        self.scheduler = build_scheduler(
            self.optimizer, config.optimizer, math.ceil(settings.num_examples / accumulate)
        )
        self.reference = ReferencePolicy(student, config.grpo.update_ref_every)
        self.metrics = metrics or MetricsLog(Path(settings.checkpoint_dir) / "metrics.jsonl")
        self.step = 0
        self.updates = 0  # optimiser steps taken by this process (a resumed run counts from 0 again)
        self.order: list[int] = []  # question indices of this process's examples, for tests and logs
        self.eos = getattr(student.tokenizer, "eos_token_id", None)

    # --- checkpoints -----------------------------------------------------------------------------

    def save(self) -> Path:
        state = CheckpointState(
            step=self.step,
            optimizer=self.optimizer.state_dict(),
            scheduler=self.scheduler.state_dict(),
            rng=capture_rng(self.rng),
            sampler=self.sampler.state,
            teacher_bandit=self.bandit.state_dict() if self.bandit is not None else {},
            metrics=tuple(self.metrics.records),
        )
        return save_checkpoint(self.settings.checkpoint_dir, state, self.student, keep_last=self.settings.keep_last)

    def resume(self) -> bool:
        """Load the latest checkpoint, if any; True when one was loaded."""
        latest = find_latest(self.settings.checkpoint_dir)
        if latest is None:
            logger.warning("--resume: no checkpoint in %s; starting from scratch", self.settings.checkpoint_dir)
            return False
        state = load_checkpoint(latest, self.student)
        self.reference.restore(latest / "adapter")
        self.optimizer.load_state_dict(state.optimizer)
        self.scheduler.load_state_dict(state.scheduler)
        restore_rng(state.rng, self.rng)
        self.sampler = QuestionSampler(len(self.rows), self.settings.seed, state.sampler)
        if self.bandit is not None and state.teacher_bandit:
            self.bandit.load_state_dict(state.teacher_bandit)
        self.metrics = MetricsLog(self.metrics.path, state.metrics, self.metrics.reporters)
        self.step = state.step
        logger.info("resumed from %s at example %d", latest, self.step)
        return True

    # --- one example -----------------------------------------------------------------------------

    def train_example(self) -> dict[str, Any]:
        start = time.perf_counter()
        index = self.sampler.next()
        self.order.append(index)
        row = self.rows[index]
        result = self.search_fn(row["question"], str(row["answer"]), self.rng, self.step)
        record: dict[str, Any] = {"step": self.step + 1, "question_index": index, **group_stats(result)}
        record.update(self.update(self.tokenise(row["question"], result.trajectories)))
        self.step += 1
        self.reference.after_example(self.step)
        if self.extra_metrics is not None:
            record.update(self.extra_metrics())
        record["lr"] = self.scheduler.get_last_lr()[0]
        record["time_s"] = time.perf_counter() - start
        self.metrics.log(record)
        return record

    def tokenise(self, question: str, trajectories: Sequence[Trajectory]) -> Batch:
        messages = [{"role": "system", "content": self.settings.system_prompt}, {"role": "user", "content": question}]
        completions, rewards = [], []
        for traj in trajectories:
            ids = self.student.tokenizer(traj.text, add_special_tokens=False)["input_ids"]
            if traj.terminal and self.eos is not None:
                ids = [*ids, self.eos]
            ids = ids[: self.settings.max_completion_tokens]
            if ids:
                completions.append(ids)
                rewards.append(traj.reward)
        return Batch(self.student.prompt_ids(messages), completions, torch.tensor(rewards, dtype=torch.float32))

    def _logprobs(self, batch: Batch, members: Sequence[int]) -> list[torch.Tensor]:
        return self.student.token_logprobs(
            [batch.prompt_ids] * len(members), [batch.completion_ids[i] for i in members]
        )

    def update(self, batch: Batch) -> dict[str, Any]:
        """Accumulate the group's loss gradient; step the optimiser when an accumulation cycle is complete."""
        group = len(batch.completion_ids)
        out: dict[str, Any] = {"loss": None, "kl": None, "grad_norm": None, "skipped": False, "updated": False}
        if group == 0:
            logger.warning("example %d: the search gave no trajectory with text; nothing to learn", self.step + 1)
            return out
        grpo, legacy, opt = self.config.grpo, self.config.legacy, self.config.optimizer
        use_grpo = self.settings.loss == "grpo"
        kl_weight = grpo.beta if use_grpo else legacy.kl_weight
        ref = None
        if kl_weight > 0:
            with torch.no_grad(), self.reference.active():
                ref = self._logprobs(batch, range(group))
        advantages = group_advantages(batch.rewards, grpo.advantage_clip)
        loss_total, kl_total = 0.0, 0.0
        self.student.model.train()
        try:
            for start in range(0, group, opt.micro_batch_size):
                members = list(range(start, min(group, start + opt.micro_batch_size)))
                logprobs, mask = pad(self._logprobs(batch, members))
                ref_lp = pad([ref[i] for i in members])[0] if ref is not None else None
                if use_grpo:
                    loss, stats = grpo_loss(
                        logprobs, logprobs.detach(), ref_lp, advantages[members], mask,
                        epsilon=grpo.clip_epsilon, beta=grpo.beta, entropy_coef=grpo.entropy_coef,
                        loss_type=grpo.loss_type, max_completion_length=self.settings.max_completion_tokens,
                    )  # fmt: skip
                else:
                    loss, stats = legacy_loss(
                        logprobs, ref_lp, batch.rewards[members], mask, legacy.min_reward_threshold, legacy.kl_weight
                    )
                if not torch.isfinite(loss):
                    logger.warning("example %d: non-finite loss %s; update skipped", self.step + 1, float(loss))
                    self.optimizer.zero_grad(set_to_none=True)
                    out["skipped"] = True
                    return out
                share = len(members) / group / opt.gradient_accumulation_steps
                (loss * share).backward()
                loss_total += float(loss.detach()) * len(members) / group
                kl_total += stats.get("kl", 0.0) * len(members) / group
        finally:
            self.student.model.eval()
        out.update(loss=loss_total, kl=kl_total)
        if (self.step + 1) % opt.gradient_accumulation_steps == 0:
            out.update(self._optimizer_step())
        return out

    def _optimizer_step(self) -> dict[str, Any]:
        params = [p for group in self.optimizer.param_groups for p in group["params"]]
        norm = float(torch.nn.utils.clip_grad_norm_(params, self.config.optimizer.max_grad_norm))
        if not math.isfinite(norm):
            logger.warning("example %d: non-finite gradient norm; update skipped", self.step + 1)
            self.optimizer.zero_grad(set_to_none=True)
            return {"grad_norm": norm, "skipped": True}
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.updates += 1
        return {"grad_norm": norm, "updated": True}

    # --- the run ---------------------------------------------------------------------------------

    def run(self, progress: bool = True) -> list[dict[str, Any]]:
        """Train until `num_examples` examples are done, checkpointing every `save_every` and at the end."""
        from tqdm.auto import tqdm

        total = self.settings.num_examples
        bar = tqdm(total=total, initial=self.step, desc="training", unit="q", disable=not progress)
        try:
            while self.step < total:
                record = self.train_example()
                bar.update(1)
                bar.set_postfix(reward=_fmt(record.get("reward_mean")), loss=_fmt(record.get("loss")))
                if self.step % self.settings.log_interval == 0:
                    logger.info(
                        "example %d/%d: reward %s, hre %s, loss %s, kl %s, nodes %s, %.1fs",
                        self.step, total, _fmt(record["reward_mean"]), _fmt(record["hre_mean"]),
                        _fmt(record["loss"]), _fmt(record["kl"]), record["tree_nodes"], record["time_s"],
                    )  # fmt: skip
                if self.step % self.settings.save_every == 0 or self.step == total:
                    self.save()
        finally:
            bar.close()
        return self.metrics.records


def _fmt(value: Any) -> str:
    return "-" if value is None else f"{value:.4g}"
