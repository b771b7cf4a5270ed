"""The training run: draw a problem, ask the trajectory source for a group, make one GRPO (or legacy) update.

Per example (one problem):
1. `QuestionSampler` picks the problem of global example g (without replacement, cycling; seeded); the example's
   randomness (Python and torch) is seeded from (seed, g) alone, so it does not depend on which process runs it.
2. The `source` (`training.sources`: one tree search, by default) returns its `Group`.
3. The loss scores exactly the group's tokens: `prompt_ids` followed by each trajectory's
   `completion_ids` (plus EOS for a terminal one, so stopping is learnt), nothing re-rendered or
   re-tokenised. Every log-prob, the policy's and the reference's, is taken at the group's sampling
   `temperature` (logits / T, as TRL does), so the ratio and the KL compare the distribution the
   student sampled from. Reference log-probs are computed once, before the update, without grad,
   under the reference policy; all come from `StudentModel.token_logprobs` in one dtype. No
   forward is spent on old log-probs: a group gets exactly one gradient pass, with the weights that
   produced it (the optimiser steps after), so the old policy is the current one and its log-probs
   are the current ones, detached (TRL's `num_iterations=1`). The ratio is then 1 and its gradient
   the policy gradient.

   Off-policy tokens. A teacher's or the reference's step was not sampled by the student, yet it
   is scored like the student's own tokens: its old log-probs are the current ones too, so its
   ratio is 1 and it contributes advantage x grad log p_T(token), an advantage-weighted imitation
   term (as rStar-Math's and ReST-MCTS*'s training on teacher-made trajectories). No importance
   correction is applied: the teacher's own probabilities are unknown.
4. GRPO: `group_advantages` of the rewards, `grpo_loss` per micro-batch of `micro_batch_size`
   trajectories, each scaled by its share of the group and by 1/gradient_accumulation_steps, so
   the accumulated gradient is that of the whole group's loss ("bnpo" averages each micro-batch's
   tokens, as TRL does). `grpo.loss_type` picks the normalisation. Legacy: `legacy_loss` of each
   micro-batch divided by the whole group's kept count, so the parts add up to the group's loss and
   micro-batching never changes the gradient (tests/test_loop.py compares the accumulated gradients
   with one whole-group backward).
5. Every `gradient_accumulation_steps` rounds: clip to `max_grad_norm`, AdamW step, LR schedule step.
   A NaN/inf loss or gradient norm skips the update (logged); the gradients are dropped, never applied.

Processes (`training.distributed`). The run goes in rounds of `world_size` examples: rank r trains global
example `step + r`. Before each optimiser step the ranks' gradients are summed and scaled to the mean over all
the cycle's examples, so W processes with accumulation A step as one process with accumulation W x A (over the
same examples, in the same order); a non-finite loss on any rank skips the step on every rank. Rank 0 gathers
every rank's per-example record and alone writes metrics and checkpoints; at each checkpoint the ranks' adapters
are compared, and a difference stops the run. One process is a world of one: no collective, the same steps.

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

import hashlib
import json
import logging
import math
import random
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import torch

from alphazero_llm.config import TrainingConfig
from alphazero_llm.data import Problem
from alphazero_llm.training import distributed
from alphazero_llm.training.checkpoint import (
    CheckpointState,
    capture_rng,
    load_checkpoint,
    restore_rng,
    save_checkpoint,
    select_checkpoint,
)
from alphazero_llm.training.grpo import group_advantages, grpo_loss, legacy_loss
from alphazero_llm.training.metrics import MetricsLog
from alphazero_llm.training.optim import build_optimizer, build_scheduler
from alphazero_llm.training.sampler import QuestionSampler
from alphazero_llm.training.sources import TrajectorySource
from alphazero_llm.trajectory import Group

logger = logging.getLogger(__name__)

REFERENCE_ADAPTER = "reference"
RANKS_FILE = "ranks.jsonl"  # one line per checkpoint of a multi-process run: each rank's adapter digest


class BanditState(Protocol):
    def state_dict(self) -> dict[str, Any]: ...
    def load_state_dict(self, state: Mapping[str, Any]) -> None: ...


@dataclass(frozen=True)
class Batch:
    """One question's group, tokenised."""

    prompt_ids: list[int]
    completion_ids: list[list[int]]
    rewards: torch.Tensor  # [G]
    temperature: float  # the log-probs' temperature: the one the student sampled at


def pad(rows: Sequence[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-pad 1-D tensors to [B, T]; returns (values, mask). Keeps grad and dtype."""
    width = max(1, max(r.numel() for r in rows))
    values = torch.stack([torch.nn.functional.pad(r, (0, width - r.numel())) for r in rows])
    mask = torch.stack([torch.arange(width) < r.numel() for r in rows]).to(values.dtype)
    return values, mask


def group_stats(group: Group) -> dict[str, Any]:
    """The group's reward, HRE and PRE statistics (the values its rewards were made of), and the source's own."""
    trajs = group.trajectories
    rewards = [t.reward for t in trajs]
    return {
        "group_size": len(trajs),
        "reward_mean": _mean(rewards),
        "reward_max": max(rewards) if rewards else None,
        "hre_mean": _mean([t.hre for t in trajs if t.hre is not None]),
        "pre_mean": _mean([t.pre for t in trajs if t.pre is not None]),
        **group.metrics,
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

    def after_examples(self, before: int, after: int) -> None:
        """Refresh the snapshot when a multiple of `update_every` lies in (before, after] (a round's examples)."""
        if self.update_every > 0 and after // self.update_every > before // self.update_every:
            self.snapshot()
            logger.info("reference adapter refreshed from the policy at example %d", after)

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
        source: TrajectorySource,
        problems: Sequence[Problem],
        config: TrainingConfig,
        *,
        rng: random.Random | None = None,
        bandit: BanditState | None = None,
        metrics: MetricsLog | None = None,
        dist: distributed.Dist | None = None,
    ) -> None:
        run = config.run
        accumulate = config.optimizer.gradient_accumulation_steps
        if run.save_every % accumulate:
            # A checkpoint between two accumulated examples would lose their gradients on resume.
            raise ValueError(f"save_every ({run.save_every}) must be a multiple of gradient_accumulation_steps")
        if not problems:
            raise ValueError("no problems to train on")
        self.student = student
        self.source = source
        self.problems = problems
        self.config = config
        self.run_config = run
        self.checkpoint_dir = Path(run.checkpoint_dir)
        self.rng = rng if rng is not None else random.Random(config.seed)
        self.bandit = bandit
        self.sampler = QuestionSampler(len(problems), config.seed)
        self.dist = dist or distributed.Dist()
        self.optimizer = build_optimizer(student.model.parameters(), config.optimizer, student.device)
        self.scheduler = build_scheduler(self.optimizer, config.optimizer, math.ceil(run.num_examples / accumulate))
        self.reference = ReferencePolicy(student, config.grpo.update_ref_every)
        self.metrics = metrics or MetricsLog(self.checkpoint_dir / "metrics.jsonl")
        self.step = 0  # examples done, by all ranks: the next round starts at global example `step`
        self.updates = 0  # optimiser steps taken by this process (a resumed run counts from 0 again)
        self.order: list[int] = []  # question indices of this process's examples, for tests and logs
        self._rounds = 0  # rounds accumulated since the last optimiser step
        self._cycle_examples = 0  # examples this rank accumulated since the last optimiser step
        self._poisoned = False  # a non-finite loss on this rank since the last optimiser step
        self._next_save = run.save_every
        self.eos = getattr(student.tokenizer, "eos_token_id", None)

    # --- checkpoints -----------------------------------------------------------------------------

    def save(self) -> Path | None:
        """Every rank: compare the adapters (`distributed.check_identical`); rank 0: write the checkpoint (and,
        with several ranks, their digests to ranks.jsonl). Returns the checkpoint's path on rank 0."""
        digests = distributed.check_identical(self.adapter(), self.dist) if self.dist.enabled else []
        if not self.dist.is_main:
            distributed.all_gather(None, self.dist)  # wait for rank 0's checkpoint: no rank runs ahead of it
            return None
        state = CheckpointState(
            step=self.step,
            optimizer=self.optimizer.state_dict(),
            scheduler=self.scheduler.state_dict(),
            rng=capture_rng(self.rng),
            sampler=self.sampler.state(self.step),
            teacher_bandit=self.bandit.state_dict() if self.bandit is not None else {},
            metrics=tuple(self.metrics.records),
        )
        keep_last = self.run_config.keep_last or None  # 0 keeps every checkpoint
        path = save_checkpoint(self.checkpoint_dir, state, self.student, keep_last=keep_last)
        if self.dist.enabled:
            line = {"step": self.step, "world_size": self.dist.world_size, "adapter_sha256": digests}
            with (self.checkpoint_dir / RANKS_FILE).open("a", encoding="utf-8") as handle:
                handle.write(json.dumps(line) + "\n")
            logger.info("checkpoint %s: the adapter is identical on all %d ranks", path.name, self.dist.world_size)
        distributed.all_gather(None, self.dist)
        return path

    def adapter(self) -> list[torch.Tensor]:
        """The trained parameters (the LoRA adapter), in a fixed order."""
        return [p for p in self.student.model.parameters() if p.requires_grad]

    def resume(self, directory: Path | None = None) -> bool:
        """Load `directory`, else the newest good checkpoint (`select_checkpoint`); True when one was loaded.

        Nothing in the run directory is written here: the metrics file is rewritten from the
        checkpoint's records only when the next example is logged.
        """
        latest = directory if directory is not None else select_checkpoint(self.checkpoint_dir).chosen
        if latest is None:
            logger.warning("--resume: no good checkpoint in %s; starting from scratch", self.checkpoint_dir)
            return False
        state = load_checkpoint(latest, self.student)
        self.reference.restore(latest / "adapter")
        self.optimizer.load_state_dict(state.optimizer)
        self.scheduler.load_state_dict(state.scheduler)
        restore_rng(state.rng, self.rng)
        self.sampler.check(state.sampler)
        if self.bandit is not None and state.teacher_bandit:
            self.bandit.load_state_dict(state.teacher_bandit)
        self.metrics = MetricsLog(self.metrics.path, state.metrics, self.metrics.reporters)
        self.step = state.step
        self._next_save = (self.step // self.run_config.save_every + 1) * self.run_config.save_every
        logger.info("resumed from %s at example %d", latest, self.step)
        return True

    # --- one example -----------------------------------------------------------------------------

    def train_example(self) -> dict[str, Any]:
        """One process: train the next example (and step the optimiser when its cycle is complete)."""
        if self.dist.enabled:
            raise RuntimeError("train_example() is for one process; with several ranks, use train_round()")
        (record,) = self.train_round()
        return record

    def train_round(self) -> list[dict[str, Any]]:
        """The next `world_size` examples, one per rank (fewer at the run's end): search, loss and gradient on
        each rank, then the averaged optimiser step when the accumulation cycle is complete. Returns every rank's
        record, in example order (each rank gets them all); rank 0 logs them."""
        first = self.step
        count = min(self.dist.world_size, self.run_config.num_examples - first)
        record = self._train(first + self.dist.rank) if self.dist.rank < count else None
        self._rounds += 1
        if self._rounds == self.config.optimizer.gradient_accumulation_steps:
            outcome = self._optimizer_step()
            if record is not None:
                record.update(outcome)
        self.step = first + count
        self.reference.after_examples(first, self.step)
        records = [r for r in distributed.all_gather(record, self.dist) if r is not None]
        lr = self.scheduler.get_last_lr()[0]
        for r in records:
            r["lr"] = lr
            if self.dist.is_main:
                self.metrics.log(r)
        return records

    def _seed(self, example: int) -> None:
        """Example `example`'s randomness, Python's and torch's, from (seed, example) alone."""
        digest = hashlib.sha256(f"{self.config.seed}:{example}".encode()).digest()
        seed = int.from_bytes(digest[:8], "little") % (2**63)
        self.rng.seed(seed)
        torch.manual_seed(seed)

    def _train(self, example: int) -> dict[str, Any]:
        """Search global example `example` and accumulate its loss gradient (no optimiser step)."""
        start = time.perf_counter()
        self._seed(example)
        index = self.sampler.at(example)
        self.order.append(index)
        problem = self.problems[index]
        group = self.source(problem, self.rng, example)
        record: dict[str, Any] = {
            "step": example + 1, "rank": self.dist.rank, "question_index": index, "problem_id": problem.id,
        }  # fmt: skip
        record.update(group_stats(group))
        batch = self.batch(group)
        record["grad_tokens"] = sum(len(ids) for ids in batch.completion_ids)  # the tokens the loss scores
        record.update(self.accumulate(batch, example))
        record["time_s"] = time.perf_counter() - start
        return record

    def batch(self, group: Group) -> Batch:
        """The group's tokens as the loss scores them (module docstring), cut to `max_completion_tokens`."""
        completions, rewards = [], []
        for traj in group.trajectories:
            ids = list(traj.completion_ids)
            if traj.terminal and self.eos is not None:
                ids.append(self.eos)
            ids = ids[: self.run_config.max_completion_tokens]
            if ids:
                completions.append(ids)
                rewards.append(traj.reward)
        rewards_t = torch.tensor(rewards, dtype=torch.float32)
        return Batch(list(group.prompt_ids), completions, rewards_t, group.temperature)

    def _logprobs(self, batch: Batch, members: Sequence[int]) -> list[torch.Tensor]:
        return self.student.token_logprobs(
            [batch.prompt_ids] * len(members),
            [batch.completion_ids[i] for i in members],
            temperature=batch.temperature,
        )

    def update(self, batch: Batch) -> dict[str, Any]:
        """One process: accumulate the group's loss gradient, and step the optimiser when the cycle is complete."""
        out = self.accumulate(batch, self.step)
        self._rounds += 1
        if self._rounds == self.config.optimizer.gradient_accumulation_steps:
            out.update(self._optimizer_step())
        return out

    def accumulate(self, batch: Batch, example: int) -> dict[str, Any]:
        """Add the group's loss gradient (scaled by 1 / gradient_accumulation_steps) to the parameters' grads."""
        group = len(batch.completion_ids)
        out: dict[str, Any] = {"loss": None, "kl": None, "grad_norm": None, "skipped": False, "updated": False}
        if group == 0:
            logger.warning("example %d: the search gave no trajectory with text; nothing to learn", example + 1)
            return out
        grpo, legacy, opt = self.config.grpo, self.config.legacy, self.config.optimizer
        use_grpo = self.run_config.loss == "grpo"
        kl_weight = grpo.beta if use_grpo else legacy.kl_weight
        ref = None
        if kl_weight > 0:
            with torch.no_grad(), self.reference.active():
                ref = self._logprobs(batch, range(group))
        advantages = group_advantages(batch.rewards, grpo.advantage_clip)
        kept = int((batch.rewards > legacy.min_reward_threshold).sum())  # the legacy loss's normaliser
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
                        loss_type=grpo.loss_type, max_completion_length=self.run_config.max_completion_tokens,
                    )  # fmt: skip
                else:
                    loss, stats = legacy_loss(
                        logprobs, ref_lp, batch.rewards[members], mask, legacy.min_reward_threshold, legacy.kl_weight,
                        num_kept=kept,
                    )  # fmt: skip
                if not torch.isfinite(loss):
                    logger.warning("example %d: non-finite loss %s; update skipped", example + 1, float(loss))
                    self._poisoned = True
                    out["skipped"] = True
                    return out
                # The micro-batch's part of the group's loss: a mean over the group's rows for GRPO; the
                # legacy loss is already divided by the group's kept count, so its parts simply add up.
                part = len(members) / group if use_grpo else 1.0
                (loss * part / opt.gradient_accumulation_steps).backward()
                loss_total += float(loss.detach()) * part
                kl_total += stats.get("kl", 0.0) * len(members) / group
        finally:
            self.student.model.eval()
        out.update(loss=loss_total, kl=kl_total)
        self._cycle_examples += 1
        return out

    def _optimizer_step(self) -> dict[str, Any]:
        """End the accumulation cycle: average the ranks' gradients, clip, step (or skip, on every rank alike)."""
        params = [p for group in self.optimizer.param_groups for p in group["params"]]
        poisoned = distributed.any_rank(self._poisoned, self.dist)
        examples = sum(distributed.all_gather(self._cycle_examples, self.dist))
        self._rounds, self._cycle_examples, self._poisoned = 0, 0, False
        if poisoned or examples == 0:
            self.optimizer.zero_grad(set_to_none=True)
            return {"skipped": True} if poisoned else {}
        # Each rank holds (1/A) x the sum of its examples' gradients; the mean over the cycle's examples is
        # A / examples x their sum (1 for one process with a full cycle).
        scale = self.config.optimizer.gradient_accumulation_steps / examples
        distributed.average_gradients(params, self.dist, scale)
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

        total = self.run_config.num_examples
        show = progress and self.dist.is_main
        bar = tqdm(total=total, initial=self.step, desc="training", unit="q", disable=not show)
        try:
            while self.step < total:
                for record in self.train_round():
                    bar.update(1)
                    bar.set_postfix(reward=_fmt(record.get("reward_mean")), loss=_fmt(record.get("loss")))
                    if record["step"] % self.run_config.log_interval == 0 and self.dist.is_main:
                        logger.info(
                            "example %d/%d (rank %d): reward %s, hre %s, pre %s, loss %s, kl %s, group %d, %.1fs",
                            record["step"], total, record["rank"], _fmt(record["reward_mean"]),
                            _fmt(record["hre_mean"]), _fmt(record["pre_mean"]), _fmt(record["loss"]),
                            _fmt(record["kl"]), record["group_size"], record["time_s"],
                        )  # fmt: skip
                # A checkpoint waits for the end of an accumulation cycle: pending gradients are not saved.
                if self.step == total or (self.step >= self._next_save and self._rounds == 0):
                    self.save()
                    self._next_save = (self.step // self.run_config.save_every + 1) * self.run_config.save_every
        finally:
            bar.close()
        return self.metrics.records


def _fmt(value: Any) -> str:
    return "-" if value is None else f"{value:.4g}"
