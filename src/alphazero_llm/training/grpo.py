"""GRPO and legacy losses as pure tensor functions (no model, no optimiser, no I/O).

Shapes: B sequences (a question's group, or several groups), T completion tokens
(right-padded; `mask[b, t]` is 1 for a real token). Log-probs are those of the
sampled tokens only, as `StudentModel.token_logprobs` returns them, padded to T.

Sources of the formulas:
- group advantages: Shao et al. 2024, "DeepSeekMath", section 4.1.2 (outcome supervision);
- clipped ratio: Schulman et al. 2017, "Proximal Policy Optimization", eq. 7, applied per token as in GRPO;
- k3 KL: Schulman 2020, "Approximating KL divergence" (http://joschu.net/blog/kl-approx.html),
  direction KL(pi_theta || pi_ref) as in DeepSeekMath eq. 4 and TRL's GRPOTrainer;
- normalisations: TRL's GRPOTrainer `loss_type` ("grpo", "bnpo", "dr_grpo"; the last from
  Liu et al. 2025, "Understanding R1-Zero-Like Training"). tests/test_grpo.py checks parity with TRL's code.

The reference log-probs come from the base model with the LoRA adapter disabled
(`StudentModel.reference()`), never from a deep copy.
"""

from __future__ import annotations

import logging
from typing import get_args

import torch
from torch import Tensor

from alphazero_llm.config import GRPOLossType as LossType

logger = logging.getLogger(__name__)

LOSS_TYPES: tuple[LossType, ...] = get_args(LossType)


def group_advantages(rewards: Tensor, clip: float, eps: float = 1e-6) -> Tensor:
    """Group-normalised advantages of one question's trajectories: clip((r - mean) / (std + eps), ±clip).

    rewards: [G] float. Returns [G], same dtype.

    `std` is the sample standard deviation (Bessel's correction, n - 1), as in
    DeepSeekMath's reference code (`torch.std`) and TRL (`nanstd`), so that our
    advantages match theirs on the same group. TRL adds eps=1e-4; pass that to
    reproduce its numbers exactly. A group whose rewards are all equal (std 0)
    has nothing to prefer and gets all-zero advantages, as does a group of one.
    """
    if rewards.dim() != 1:
        raise ValueError(f"rewards must be 1-D [G], got shape {tuple(rewards.shape)}")
    if clip <= 0:
        raise ValueError(f"clip must be positive, got {clip}")
    if rewards.numel() < 2:
        return torch.zeros_like(rewards)
    centred = rewards - rewards.mean()
    std = rewards.std(unbiased=True)
    # An exactly constant group: (r - mean) is 0 already, but say so explicitly rather than rely on 0 / eps.
    if std == 0:
        return torch.zeros_like(rewards)
    return (centred / (std + eps)).clamp(-clip, clip)


def clipped_surrogate(
    logprobs: Tensor, old_logprobs: Tensor, advantages: Tensor, mask: Tensor, epsilon: float
) -> Tensor:
    """Per-token PPO clipped surrogate loss, -min(ratio * A, clip(ratio, 1 - eps, 1 + eps) * A).

    logprobs, old_logprobs, mask: [B, T]; advantages: [B] (one per sequence) or [B, T].
    Returns [B, T], zero where `mask` is 0. ratio = exp(logprobs - old_logprobs) per token
    (PPO eq. 7, token-level as in GRPO). Gradients flow through `logprobs` only.
    """
    _check_same_shape(logprobs=logprobs, old_logprobs=old_logprobs, mask=mask)
    adv = advantages.unsqueeze(1) if advantages.dim() == 1 else advantages
    keep = mask.bool()
    # Masked positions may hold padding garbage; zero the log-ratio there so exp() cannot overflow
    # and no NaN reaches the gradient through a position we then discard.
    log_ratio = torch.where(keep, logprobs - old_logprobs.detach(), torch.zeros_like(logprobs))
    ratio = torch.exp(log_ratio)
    clipped = ratio.clamp(1.0 - epsilon, 1.0 + epsilon)
    per_token = -torch.min(ratio * adv, clipped * adv)
    return torch.where(keep, per_token, torch.zeros_like(per_token))


def k3_kl(logprobs: Tensor, ref_logprobs: Tensor, mask: Tensor | None = None) -> Tensor:
    """Per-token k3 estimator of KL(pi_theta || pi_ref): exp(d) - d - 1 with d = ref_logprobs - logprobs.

    logprobs, ref_logprobs (and mask, if given): [B, T]. Returns [B, T], >= 0 (exp(d) >= 1 + d),
    zero where `mask` is 0. Unbiased for KL(pi_theta || pi_ref) when the tokens were sampled from
    pi_theta (Schulman 2020; DeepSeekMath eq. 4; TRL). The reference carries no gradient.
    Computed as expm1(d) - d, which is the same quantity with less cancellation for small d;
    the clamp only removes rounding below zero.
    """
    _check_same_shape(logprobs=logprobs, ref_logprobs=ref_logprobs)
    d = ref_logprobs.detach() - logprobs
    if mask is not None:
        _check_same_shape(logprobs=logprobs, mask=mask)
        d = torch.where(mask.bool(), d, torch.zeros_like(d))
    return (torch.expm1(d) - d).clamp_min(0.0)


def sampled_token_entropy(logprobs: Tensor) -> Tensor:
    """Per-token entropy estimate when only the sampled tokens' log-probs are known: -logprobs.

    [B, T] -> [B, T]. E_{y ~ pi}[-log pi(y)] = H(pi), so this is an unbiased single-sample
    estimate for on-policy tokens. Pass exact per-position entropies to `grpo_loss` when the
    full distribution is at hand (TRL computes them from the logits).
    """
    return -logprobs


def masked_mean(values: Tensor, mask: Tensor) -> Tensor:
    """Mean of `values` [B, T] over the positions where `mask` [B, T] is 1; 0 for an empty mask."""
    keep = mask.bool()
    total = torch.where(keep, values, torch.zeros_like(values)).sum()
    return total / keep.sum().clamp(min=1)


def aggregate(per_token: Tensor, mask: Tensor, loss_type: LossType, max_completion_length: int | None = None) -> Tensor:
    """Reduce a per-token loss [B, T] to a scalar, with TRL's normalisation for `loss_type`.

    - "grpo": mean over sequences of each sequence's mean over its own tokens
      (DeepSeekMath eq. 3: 1/G sum_i 1/|o_i| sum_t). Long answers weigh less per token.
    - "bnpo": sum over all tokens / number of real tokens in the batch (a token-level mean).
    - "dr_grpo": sum over all tokens / (B * max_completion_length), a constant that removes
      the length bias (Liu et al. 2025); `max_completion_length` defaults to T.
    A sequence with no real token counts as one sequence with loss 0 under "grpo", as in TRL.
    Gradient accumulation is the caller's: divide by the number of micro-batches, as TRL does.
    """
    keep = mask.to(per_token.dtype)
    summed = torch.where(mask.bool(), per_token, torch.zeros_like(per_token))
    if loss_type == "grpo":
        return (summed.sum(-1) / keep.sum(-1).clamp(min=1.0)).mean()
    if loss_type == "bnpo":
        return summed.sum() / keep.sum().clamp(min=1.0)
    if loss_type == "dr_grpo":
        length = per_token.size(1) if max_completion_length is None else max_completion_length
        return summed.sum() / (per_token.size(0) * length)
    raise ValueError(f"unknown loss_type {loss_type!r}; valid: {list(LOSS_TYPES)}")


def grpo_loss(
    logprobs: Tensor,
    old_logprobs: Tensor,
    ref_logprobs: Tensor | None,
    advantages: Tensor,
    mask: Tensor,
    *,
    epsilon: float,
    beta: float,
    loss_type: LossType,
    entropy_coef: float = 0.0,
    entropies: Tensor | None = None,
    max_completion_length: int | None = None,
) -> tuple[Tensor, dict[str, float]]:
    """The GRPO objective as a loss to minimise, and detached statistics for logging.

    logprobs (with grad), old_logprobs, ref_logprobs, mask, entropies: [B, T]; advantages: [B] or [B, T].
    loss = aggregate(clipped_surrogate + beta * k3_kl, loss_type) - entropy_coef * masked_mean(entropy),
    which is TRL's `GRPOTrainer._compute_loss` for the same loss_type with one accumulation step.
    The entropy bonus is a token mean whatever the loss type (as in TRL); without `entropies`
    it uses `sampled_token_entropy(logprobs)`. `ref_logprobs` may be None only when beta == 0.

    Stats: "policy_loss" (before the entropy bonus), "kl" and "entropy" (token means),
    "clip_ratio" (share of real tokens whose clipped branch is active), "ratio_mean".
    """
    if beta != 0.0 and ref_logprobs is None:
        raise ValueError("beta > 0 needs ref_logprobs (the base model's, adapter disabled)")
    if loss_type not in LOSS_TYPES:
        raise ValueError(f"unknown loss_type {loss_type!r}; valid: {list(LOSS_TYPES)}")
    per_token = clipped_surrogate(logprobs, old_logprobs, advantages, mask, epsilon)
    kl = k3_kl(logprobs, ref_logprobs, mask) if ref_logprobs is not None else torch.zeros_like(per_token)
    if beta != 0.0:
        per_token = per_token + beta * kl
    loss = aggregate(per_token, mask, loss_type, max_completion_length)
    policy_loss = loss.detach()
    entropy = sampled_token_entropy(logprobs) if entropies is None else entropies
    entropy_mean = masked_mean(entropy, mask)
    if entropy_coef != 0.0:
        loss = loss - entropy_coef * entropy_mean

    with torch.no_grad():
        adv = advantages.unsqueeze(1) if advantages.dim() == 1 else advantages
        ratio = torch.exp(torch.where(mask.bool(), logprobs - old_logprobs, torch.zeros_like(logprobs)))
        clipped = ((ratio < 1 - epsilon) & (adv < 0)) | ((ratio > 1 + epsilon) & (adv > 0))
        stats = {
            "policy_loss": float(policy_loss),
            "kl": float(masked_mean(kl.detach(), mask)),
            "entropy": float(entropy_mean.detach()),
            "clip_ratio": float(masked_mean(clipped.to(ratio.dtype), mask)),
            "ratio_mean": float(masked_mean(ratio, mask)),
        }
    return loss, stats


def legacy_loss(
    logprobs: Tensor,
    ref_logprobs: Tensor | None,
    rewards: Tensor,
    mask: Tensor,
    min_reward_threshold: float,
    kl_weight: float,
    num_kept: int | None = None,
) -> tuple[Tensor, dict[str, float]]:
    """Reward-weighted NLL on trajectories above the threshold, plus kl_weight * k3 KL to the reference.

    logprobs (with grad), ref_logprobs, mask: [B, T]; rewards: [B]. Returns (scalar loss, stats).
    `num_kept` is K below: the kept count of the whole group when these B rows are one micro-batch of
    it (then the micro-batches' losses add up to the group's, whatever their split); None: this batch's.

    Kept trajectories: reward > min_reward_threshold (LegacyConfig: "at or below are not
    trained on"). Weight w_i = reward_i - min_reward_threshold, which is the reward itself
    for the default threshold 0.0 and stays positive for any threshold, so the NLL is never
    maximised. Normalisation: each kept trajectory's NLL and KL are means over its own tokens
    (length does not change its weight), then
        loss = (1/K) sum_{i kept} [w_i * NLL_i + kl_weight * KL_i],   K = number kept.
    The KL is the k3 estimator as in `k3_kl`; on teacher-written trajectories it is a penalty
    rather than an unbiased KL estimate, since those tokens were not sampled from the student.
    With nothing kept, the loss is 0 * sum(logprobs): zero, with a grad_fn when logprobs has
    one, so backward() is safe and gives zero gradients (callers may also skip the step).
    """
    _check_same_shape(logprobs=logprobs, mask=mask)
    if rewards.shape != logprobs.shape[:1]:
        raise ValueError(f"rewards must be [B]={tuple(logprobs.shape[:1])}, got {tuple(rewards.shape)}")
    if kl_weight != 0.0 and ref_logprobs is None:
        raise ValueError("kl_weight > 0 needs ref_logprobs (the base model's, adapter disabled)")
    kept = rewards > min_reward_threshold
    n_kept = int(kept.sum())
    normaliser = n_kept if num_kept is None else num_kept
    if num_kept is not None and num_kept < n_kept:
        raise ValueError(f"num_kept ({num_kept}) is below this batch's own kept count ({n_kept})")
    if n_kept == 0:
        zero = (torch.where(mask.bool(), logprobs, torch.zeros_like(logprobs)) * 0.0).sum()
        return zero, {"nll": 0.0, "kl": 0.0, "kept": 0.0, "mean_weight": 0.0}
    keep = mask.bool() & kept.unsqueeze(1)
    lengths = keep.sum(-1).clamp(min=1).to(logprobs.dtype)
    nll = -torch.where(keep, logprobs, torch.zeros_like(logprobs)).sum(-1) / lengths  # [B]
    weights = torch.where(kept, rewards - min_reward_threshold, torch.zeros_like(rewards)).to(logprobs.dtype)
    loss = (weights * nll).sum() / normaliser
    kl_seq = torch.zeros_like(nll)
    if ref_logprobs is not None:
        kl_seq = k3_kl(logprobs, ref_logprobs, keep).sum(-1) / lengths
    if kl_weight != 0.0:
        loss = loss + kl_weight * kl_seq.sum() / normaliser
    stats = {
        "nll": float(nll.detach()[kept].mean()),
        "kl": float(kl_seq.detach()[kept].mean()),
        "kept": float(n_kept),
        "mean_weight": float(weights[kept].mean()),
    }
    return loss, stats


def is_finite(loss: Tensor) -> bool:
    """True when every element of `loss` is finite; the loop skips (and logs) the step otherwise."""
    return bool(torch.isfinite(loss).all())


def _check_same_shape(**tensors: Tensor) -> None:
    shapes = {name: tuple(t.shape) for name, t in tensors.items()}
    if len(set(shapes.values())) > 1:
        raise ValueError(f"shapes differ: {shapes}")
