"""The tree's pure parts: UCB1/PUCT against hand computations, tie-breaking, virtual loss, backup."""

from __future__ import annotations

import math
import random

import pytest

from alphazero_llm.config import RewardsConfig
from alphazero_llm.mcts.evaluate import leaf_value, path_pre
from alphazero_llm.mcts.tree import (
    Node,
    apply_virtual_loss,
    backup,
    best_child,
    best_path,
    effective_stats,
    puct_score,
    select_child,
    softmax,
    ucb1_score,
)


def make(parent: Node | None, i: int, direction: str = "right", visits: int = 0, w: float = 0.0, prior: float = 1.0):
    node = Node(
        id=i,
        step=f"s{i}",
        state=f"s{i}",
        parent=parent,
        direction=direction,
        depth=0 if parent is None else parent.depth + 1,
        proposer="t",
        visits=visits,
        value_sum=w,
        prior=prior,
    )
    if parent is not None:
        parent.children.append(node)
    return node


def test_ucb1_by_hand():
    # Q=0.5, N_child=2, N_parent=10, c=sqrt(2): 0.5 + sqrt(2) * sqrt(ln 10 / 2) = 0.5 + sqrt(ln 10)
    assert ucb1_score(0.5, 2, 10, math.sqrt(2)) == pytest.approx(0.5 + 1.5174271293851465)
    assert ucb1_score(0.0, 1, 2, 1.0) == pytest.approx(math.sqrt(math.log(2)))  # 0.8325546
    assert ucb1_score(0.3, 0, 5, 1.0) == math.inf


def test_puct_by_hand():
    # Q=0.2, P=0.5, N_child=3, N_parent=16, c=1.5: 0.2 + 1.5 * 0.5 * 4 / 4 = 0.95
    assert puct_score(0.2, 0.5, 3, 16, 1.5) == pytest.approx(0.95)
    # unvisited: Q 0 + c * P * sqrt(N) = 2 * 0.25 * 3 = 1.5
    assert puct_score(0.0, 0.25, 0, 9, 2.0) == pytest.approx(1.5)


def test_softmax_priors():
    assert softmax([math.log(1), math.log(3)]) == pytest.approx([0.25, 0.75])
    assert softmax([-1000.0, -1001.0]) == pytest.approx([1 / (1 + math.exp(-1)), 1 - 1 / (1 + math.exp(-1))])
    assert softmax([-math.inf, 0.0]) == [0.0, 1.0]


def test_ucb1_tries_unvisited_children_first_and_breaks_ties_with_rng():
    root = make(None, 0, "root", visits=3, w=1.0)
    make(root, 1, visits=3, w=3.0)  # Q = 1, very good
    make(root, 2)
    make(root, 3)
    picked = {select_child(root, "ucb1", 1.4, 1.0, random.Random(seed)).id for seed in range(20)}
    assert picked == {2, 3}  # never the visited one, and both unvisited ones are reachable
    # same seed, same choice
    assert select_child(root, "ucb1", 1.4, 1.0, random.Random(7)) is select_child(
        root, "ucb1", 1.4, 1.0, random.Random(7)
    )


def test_ucb1_selection_matches_formula():
    root = make(None, 0, "root", visits=10)
    a = make(root, 1, visits=6, w=3.0)  # 0.5 + sqrt(2 ln10 / 6) = 0.5 + 0.876 = 1.376
    b = make(root, 2, visits=4, w=1.6)  # 0.4 + sqrt(2 ln10 / 4) = 0.4 + 1.073 = 1.473
    assert select_child(root, "ucb1", math.sqrt(2), 1.0, random.Random(0)) is b
    assert select_child(root, "ucb1", 0.1, 1.0, random.Random(0)) is a  # exploitation wins with a small c


def test_puct_selection_uses_priors():
    root = make(None, 0, "root", visits=4)
    a = make(root, 1, visits=0, prior=0.8)  # 0 + 1 * 0.8 * 2 / 1 = 1.6
    b = make(root, 2, visits=2, w=1.8, prior=0.2)  # 0.9 + 0.2 * 2 / 3 = 1.033
    assert select_child(root, "puct", 1.0, 1.0, random.Random(0)) is a
    assert select_child(root, "puct", 0.1, 1.0, random.Random(0)) is b  # 0.16 vs 0.913


def test_virtual_loss_steers_away_and_returns_to_zero():
    root = make(None, 0, "root", visits=2)
    a = make(root, 1, visits=1, w=1.0)
    b = make(root, 2, visits=1, w=1.0)
    rng = random.Random(0)
    first = select_child(root, "ucb1", 1.0, 1.0, rng)
    apply_virtual_loss([root, first])
    assert effective_stats(first, 1.0) == (2.0, 0.0)  # (W - 1 * loss) / (N + 1)
    second = select_child(root, "ucb1", 1.0, 1.0, rng)
    assert second is not first  # the loss sends the second simulation elsewhere
    apply_virtual_loss([second])
    backup([root, first], 1.0, virtual=True)
    backup([second], 0.0, virtual=True)
    assert root.in_flight == a.in_flight == b.in_flight == 0
    with pytest.raises(RuntimeError):
        backup([a], 0.0, virtual=True)  # nothing in flight: bookkeeping error, loudly


def test_backup_is_mean_value():
    root = make(None, 0, "root")
    child = make(root, 1)
    for v in (1.0, 0.0, 0.5):
        backup([root, child], v, virtual=False)
    assert (root.visits, child.visits) == (3, 3)
    assert child.q == pytest.approx(0.5) and root.value_sum == pytest.approx(1.5)


def test_best_child_most_visited_then_value_then_first():
    root = make(None, 0, "root", visits=9)
    make(root, 1, visits=4, w=1.0)
    b = make(root, 2, visits=4, w=2.0)
    make(root, 3, visits=1, w=1.0)
    assert best_child(root) is b
    assert [n.id for n in best_path(root)] == [0, 2]


def test_leaf_value_formula_by_hand():
    r = RewardsConfig(hre_weight=0.4, pre_weight=0.6, length_penalty=0.01, direction_bonus=0.1, pre_discount=0.5)
    # P = (1 * 0.5 + 0.5 * -0.5) / 1.5 = 1/6; balance = right - wrong = 1 - 1 = 0
    assert path_pre([0.5, -0.5], 0.5) == pytest.approx(1 / 6)
    assert leaf_value([0.5, -0.5], ["right", "wrong"], 1.0, r) == pytest.approx(0.4 + 0.6 / 6 - 0.02)
    # student steps get no bonus; two rights: +0.2
    assert leaf_value([0, 0, 0], ["right", "right", "student"], 0.0, r) == pytest.approx(-0.03 + 0.2)
    formatted = RewardsConfig(1.0, 0.0, 0.0, 0.0, 1.0, format_bonus=0.25)
    assert leaf_value([0.0], ["student"], 1.0, formatted, formatted=True) == pytest.approx(1.25)
    assert leaf_value([0.0], ["student"], 0.0, formatted, formatted=True) == pytest.approx(0.25)
    assert leaf_value([0.0], ["student"], 0.0, formatted) == 0.0
    zero = RewardsConfig(0.0, 0.0, 0.0, 0.0, 1.0)
    assert leaf_value([1.0], ["wrong"], 1.0, zero) == 0.0  # an explicit 0 weight stays 0
