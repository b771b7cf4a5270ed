"""Loss math: hand-computed cases, and parity with TRL's real GRPOTrainer._compute_loss.

The parity tests call TRL's own `GRPOTrainer._compute_loss` (the installed version's code,
not a re-statement) on a small stand-in object that carries the attributes that method
reads; the stand-in's `_get_per_token_logps_and_entropies` returns the log-probs we feed
our loss, so both see the same per-token log-probs, old and reference log-probs,
advantages and mask. One accumulation step, one process, token-level importance sampling.
"""

from __future__ import annotations

import math
from collections import defaultdict
from types import SimpleNamespace

import pytest
import torch
from conftest import missing

from alphazero_llm.training.grpo import (
    aggregate,
    clipped_surrogate,
    group_advantages,
    grpo_loss,
    is_finite,
    k3_kl,
    legacy_loss,
    masked_mean,
    sampled_token_entropy,
)


@pytest.fixture(scope="module")
def trl_grpo():
    """TRL's GRPO trainer module, for the parity tests only: they skip without trl (the dev extra), or fail
    under ALPHAZERO_REQUIRE_REAL_PARTS; every other test here needs nothing but torch."""
    try:
        import trl.trainer.grpo_trainer as module
    except ImportError as exc:
        missing(f"trl (the dev extra) is needed for the TRL parity tests: {exc}")
    return module


# --- TRL stand-in ------------------------------------------------------------------------------


class _IdentityAccelerator:
    """One process: gather/reduce are the identity."""

    num_processes = 1
    sync_gradients = True

    def gather(self, x):
        return x

    gather_for_metrics = gather

    def reduce(self, x, reduction="sum"):
        return x


def trl_loss(
    trl_grpo,
    logprobs,
    old_logprobs,
    ref_logprobs,
    advantages,
    mask,
    *,
    epsilon,
    beta,
    loss_type,
    entropy_coef=0.0,
    entropies=None,
):
    """TRL's loss for these tensors, by running GRPOTrainer._compute_loss on a stand-in trainer."""
    B, T = logprobs.shape
    ent = torch.zeros_like(logprobs) if entropies is None else entropies
    stub = SimpleNamespace(
        _get_per_token_logps_and_entropies=lambda *a, **k: (logprobs, ent, None),
        aux_loss_enabled=False,
        top_entropy_quantile=1.0,
        off_policy_mask_threshold=None,
        importance_sampling_level="token",
        beta=beta,
        args=SimpleNamespace(use_bias_correction_kl=False, delta=None),
        loss_type=loss_type,
        epsilon_low=epsilon,
        epsilon_high=epsilon,
        use_vllm=False,
        model=SimpleNamespace(training=True),
        current_gradient_accumulation_steps=1,
        max_completion_length=T,
        _entropy_bonus_enabled=entropy_coef != 0.0,
        entropy_coef=entropy_coef,
        use_adaptive_entropy=False,
        accelerator=_IdentityAccelerator(),
        _metrics={"train": defaultdict(list), "eval": defaultdict(list)},
    )
    inputs = {
        "prompt_ids": torch.zeros(B, 1, dtype=torch.long),
        "prompt_mask": torch.ones(B, 1, dtype=torch.long),
        "completion_ids": torch.zeros(B, T, dtype=torch.long),
        "completion_mask": mask.to(torch.long),
        "advantages": advantages,
        "old_per_token_logps": old_logprobs,
    }
    if beta != 0.0:
        inputs["ref_per_token_logps"] = ref_logprobs
    return trl_grpo.GRPOTrainer._compute_loss(stub, None, inputs)


def make_batch(seed: int, B: int = 5, T: int = 7, spread: float = 0.5):
    """float64 tensors; ragged mask (one row fully real, one with a single token); ratios far enough from 1 to clip."""
    g = torch.Generator().manual_seed(seed)
    old = -torch.rand(B, T, generator=g, dtype=torch.float64) * 3 - 0.05
    logprobs = (old + torch.randn(B, T, generator=g, dtype=torch.float64) * spread).clamp(max=-1e-3)
    ref = (old + torch.randn(B, T, generator=g, dtype=torch.float64) * spread).clamp(max=-1e-3)
    lengths = torch.tensor([T, 1, 4, 6, 3][:B])
    mask = (torch.arange(T).unsqueeze(0) < lengths.unsqueeze(1)).to(torch.float64)
    # Padding holds garbage, as a real batch might: it must not leak into either loss.
    logprobs = torch.where(mask.bool(), logprobs, torch.full_like(logprobs, -5.0))
    advantages = group_advantages(torch.randn(B, generator=g, dtype=torch.float64), clip=3.0, eps=1e-4)
    return logprobs, old, ref, advantages, mask


@pytest.mark.parametrize("loss_type", ["grpo", "bnpo", "dr_grpo"])
@pytest.mark.parametrize("beta", [0.0, 0.04])
@pytest.mark.parametrize("seed", [0, 1])
def test_parity_with_trl(trl_grpo, loss_type, beta, seed):
    logprobs, old, ref, adv, mask = make_batch(seed)
    ours_lp = logprobs.clone().requires_grad_(True)
    trl_lp = logprobs.clone().requires_grad_(True)
    ours, stats = grpo_loss(ours_lp, old, ref, adv, mask, epsilon=0.2, beta=beta, loss_type=loss_type)
    theirs = trl_loss(trl_grpo, trl_lp, old, ref, adv, mask, epsilon=0.2, beta=beta, loss_type=loss_type)
    assert stats["clip_ratio"] > 0, "the batch must exercise clipping"
    assert abs(ours.item() - theirs.item()) < 1e-6
    ours.backward()
    theirs.backward()
    # Gradients agree on real tokens; on padding ours is exactly 0 (TRL's is 0 there too, via the mask).
    torch.testing.assert_close(ours_lp.grad, trl_lp.grad, atol=1e-9, rtol=0)


@pytest.mark.parametrize("loss_type", ["grpo", "bnpo", "dr_grpo"])
def test_parity_with_trl_entropy_bonus(trl_grpo, loss_type):
    logprobs, old, ref, adv, mask = make_batch(3)
    entropies = torch.rand(logprobs.shape, generator=torch.Generator().manual_seed(9), dtype=torch.float64) * 2
    ours, _ = grpo_loss(
        logprobs,
        old,
        ref,
        adv,
        mask,
        epsilon=0.2,
        beta=0.04,
        loss_type=loss_type,
        entropy_coef=0.01,
        entropies=entropies,
    )
    theirs = trl_loss(
        trl_grpo,
        logprobs,
        old,
        ref,
        adv,
        mask,
        epsilon=0.2,
        beta=0.04,
        loss_type=loss_type,
        entropy_coef=0.01,
        entropies=entropies,
    )
    assert abs(ours.item() - theirs.item()) < 1e-6


def test_kl_stat_matches_trl_metric():
    logprobs, old, ref, adv, mask = make_batch(4)
    _, stats = grpo_loss(logprobs, old, ref, adv, mask, epsilon=0.2, beta=0.04, loss_type="grpo")
    per_token = torch.exp(ref - logprobs) - (ref - logprobs) - 1
    assert stats["kl"] == pytest.approx(float((per_token * mask).sum() / mask.sum()), abs=1e-12)


# --- advantages ----------------------------------------------------------------------------------


def test_group_advantages_hand_computed():
    # mean 2, sample std 1 -> (-1, 0, 1)
    adv = group_advantages(torch.tensor([1.0, 2.0, 3.0]), clip=3.0, eps=0.0)
    torch.testing.assert_close(adv, torch.tensor([-1.0, 0.0, 1.0]))


def test_group_advantages_sample_std_matches_trl(trl_grpo):
    rewards = torch.tensor([0.0, 0.2, 1.0, 0.4], dtype=torch.float64)
    ours = group_advantages(rewards, clip=100.0, eps=1e-4)
    trl_std = trl_grpo.nanstd(rewards.view(1, -1), dim=1)
    torch.testing.assert_close(ours, (rewards - rewards.mean()) / (trl_std + 1e-4))


@pytest.mark.parametrize("rewards", [[0.5, 0.5, 0.5], [0.0, 0.0], [1.0]])
def test_group_advantages_zero_std_and_singletons(rewards):
    adv = group_advantages(torch.tensor(rewards), clip=3.0)
    assert torch.equal(adv, torch.zeros(len(rewards)))


def test_group_advantages_clip():
    # One outlier among many equal rewards: its z-score is (n-1)/sqrt(n) = 9/sqrt(10) ~ 2.85 at n=10, > 3 at n=11.
    rewards = torch.tensor([1.0] + [0.0] * 10)
    adv = group_advantages(rewards, clip=3.0)
    assert float(adv[0]) == pytest.approx(3.0)
    assert float(adv[1:].max()) > -3.0
    with pytest.raises(ValueError):
        group_advantages(torch.zeros(2, 2), clip=3.0)


# --- small functions -----------------------------------------------------------------------------


def test_clipped_surrogate_hand_computed():
    eps = 0.2
    logprobs = torch.log(torch.tensor([[1.5, 0.5, 1.1, 1.0]]))  # ratios, with old = 0
    old = torch.zeros(1, 4)
    mask = torch.tensor([[1.0, 1.0, 1.0, 0.0]])
    pos = clipped_surrogate(logprobs, old, torch.tensor([2.0]), mask, eps)
    # A > 0: -min(r A, clip(r) A) -> -1.2*2 (clipped), -0.5*2, -1.1*2; padding 0
    torch.testing.assert_close(pos, torch.tensor([[-2.4, -1.0, -2.2, 0.0]]))
    neg = clipped_surrogate(logprobs, old, torch.tensor([-2.0]), mask, eps)
    # A < 0: -min(-2r, -2clip(r)) = 2*max(r, clip(r)) -> 3.0, 1.6 (clipped), 2.2
    torch.testing.assert_close(neg, torch.tensor([[3.0, 1.6, 2.2, 0.0]]))


def test_k3_kl_hand_computed_and_non_negative():
    lp = torch.tensor([[-1.0, -2.0, -0.5]])
    ref = torch.tensor([[-1.0, -1.0, -1.5]])
    d = ref - lp
    torch.testing.assert_close(k3_kl(lp, ref), torch.exp(d) - d - 1)
    assert float(k3_kl(lp, ref)[0, 0]) == 0.0
    g = torch.Generator().manual_seed(0)
    big = torch.randn(64, 64, generator=g) * 1e-4
    assert (k3_kl(big, big + torch.randn(64, 64, generator=g) * 1e-7) >= 0).all()
    assert (k3_kl(torch.randn(8, 8, generator=g), torch.randn(8, 8, generator=g)) >= 0).all()


def test_k3_kl_mask_zeroes_padding_even_with_inf():
    lp = torch.tensor([[-1.0, float("-inf")]])
    ref = torch.tensor([[-2.0, -1.0]])
    kl = k3_kl(lp, ref, torch.tensor([[1.0, 0.0]]))
    assert torch.isfinite(kl).all() and float(kl[0, 1]) == 0.0


def test_aggregate_normalisations():
    per_token = torch.tensor([[1.0, 1.0, 1.0, 1.0], [4.0, 0.0, 0.0, 0.0]])
    mask = torch.tensor([[1.0, 1.0, 1.0, 1.0], [1.0, 0.0, 0.0, 0.0]])
    assert float(aggregate(per_token, mask, "grpo")) == pytest.approx((1.0 + 4.0) / 2)
    assert float(aggregate(per_token, mask, "bnpo")) == pytest.approx(8.0 / 5)
    assert float(aggregate(per_token, mask, "dr_grpo")) == pytest.approx(8.0 / (2 * 4))
    assert float(aggregate(per_token, mask, "dr_grpo", max_completion_length=8)) == pytest.approx(8.0 / 16)
    with pytest.raises(ValueError):
        aggregate(per_token, mask, "nope")  # type: ignore[arg-type]


def test_masked_mean_and_entropy_estimate():
    assert float(masked_mean(torch.ones(2, 2), torch.zeros(2, 2))) == 0.0
    assert torch.equal(sampled_token_entropy(torch.tensor([[-0.5]])), torch.tensor([[0.5]]))


def test_padding_does_not_change_loss_or_gradient():
    logprobs, old, ref, adv, mask = make_batch(5)
    a = logprobs.clone().requires_grad_(True)
    b = torch.where(mask.bool(), logprobs, torch.full_like(logprobs, -1e4)).requires_grad_(True)
    la, _ = grpo_loss(a, old, ref, adv, mask, epsilon=0.2, beta=0.04, entropy_coef=0.01, loss_type="grpo")
    lb, _ = grpo_loss(b, old, ref, adv, mask, epsilon=0.2, beta=0.04, entropy_coef=0.01, loss_type="grpo")
    la.backward()
    lb.backward()
    assert float(la) == pytest.approx(float(lb), abs=1e-12)
    assert torch.isfinite(b.grad).all()
    assert torch.equal(b.grad[~mask.bool()], torch.zeros_like(b.grad[~mask.bool()]))


def test_grpo_gradient_flows_and_points_the_right_way():
    # On-policy (ratio 1), beta 0: d loss / d logprob_t = -A / |o| for grpo.
    lp = torch.full((2, 2), -1.0, requires_grad=True)
    loss, stats = grpo_loss(
        lp, lp.detach(), None, torch.tensor([1.0, -1.0]), torch.ones(2, 2), epsilon=0.2, beta=0.0, loss_type="grpo"
    )
    loss.backward()
    torch.testing.assert_close(lp.grad, torch.tensor([[-0.25, -0.25], [0.25, 0.25]]))
    assert stats["ratio_mean"] == pytest.approx(1.0) and stats["clip_ratio"] == 0.0
    with pytest.raises(ValueError, match="ref_logprobs"):
        grpo_loss(lp, lp.detach(), None, torch.zeros(2), torch.ones(2, 2), epsilon=0.2, beta=0.1, loss_type="grpo")


# --- legacy --------------------------------------------------------------------------------------


def test_legacy_loss_hand_computed():
    lp = torch.tensor([[-1.0, -3.0], [-2.0, -9.0], [-0.5, -0.5]], requires_grad=True)
    mask = torch.tensor([[1.0, 1.0], [1.0, 0.0], [1.0, 1.0]])
    rewards = torch.tensor([0.5, 1.0, 0.0])  # the last is at the threshold: not trained on
    loss, stats = legacy_loss(lp, lp.detach(), rewards, mask, min_reward_threshold=0.0, kl_weight=0.1)
    # NLL means: row0 2.0, row1 2.0 (padding ignored); weights 0.5, 1.0; K = 2; KL 0 (ref = policy)
    assert float(loss) == pytest.approx((0.5 * 2.0 + 1.0 * 2.0) / 2)
    assert stats["kept"] == 2.0
    loss.backward()
    torch.testing.assert_close(lp.grad, torch.tensor([[-0.125, -0.125], [-0.5, 0.0], [0.0, 0.0]]))


def test_legacy_loss_kl_and_threshold_weights():
    lp = torch.tensor([[-1.0, -2.0]])
    ref = torch.tensor([[-2.0, -1.0]])
    loss, stats = legacy_loss(lp, ref, torch.tensor([0.3]), torch.ones(1, 2), min_reward_threshold=-0.2, kl_weight=0.5)
    kl = float(k3_kl(lp, ref).mean())
    assert float(loss) == pytest.approx(0.5 * 1.5 + 0.5 * kl)  # weight = 0.3 - (-0.2)
    assert stats["kl"] == pytest.approx(kl)


def test_legacy_loss_nothing_kept_is_zero_with_grad():
    lp = torch.randn(2, 3, requires_grad=True)
    loss, stats = legacy_loss(lp, None, torch.tensor([0.0, -1.0]), torch.ones(2, 3), 0.0, kl_weight=0.0)
    assert float(loss) == 0.0 and loss.grad_fn is not None and stats["kept"] == 0.0
    loss.backward()
    assert torch.equal(lp.grad, torch.zeros(2, 3))


def test_is_finite():
    assert is_finite(torch.tensor(1.0))
    assert not is_finite(torch.tensor(math.nan))
    assert not is_finite(torch.tensor([1.0, math.inf]))
