"""The search tree: nodes (partial solutions), edges (reasoning steps) and the selection rules.

A node's `state` is the whole partial solution, the concatenation of its path's step texts; its
`step` is the text that its edge added, and `token_ids` the tokens that render that text (a student
step's sampled tokens verbatim; see `teacher_step_text` for the others). `state_ids` are the path's
tokens: what the student is conditioned on after the prompt, and what the loss scores.
Statistics follow mctx / alpha-zero-general: `visits` N, `value_sum` W, Q = W / N, and a `prior`
P (uniform unless the student scores steps).

The path code records the directions from the root: one character per edge, "1" for a teacher's
"right" step, "0" for a "wrong" one (the seed's binary code) and "s" for the student's own step,
which is neither. The root's code is "".

Selection rules (pure functions, below):

- UCB1 (Auer, Cesa-Bianchi & Fischer 2002; as UCT in Kocsis & Szepesvári 2006):
  ``score = Q + c * sqrt(ln N_parent / N_child)``; a child with N_child = 0 scores +inf, so
  every child is tried once before any is tried twice.
- PUCT (Silver et al. 2017, AlphaZero; Rosin 2011):
  ``score = Q + c * P * sqrt(N_parent) / (1 + N_child)``, with Q = 0 for an unvisited child
  (mctx's default for a child without a value).

Virtual loss (Chaslot, Winands & van den Herik 2008; AlphaGo): each simulation in flight counts
as one extra visit of value `-virtual_loss` on every node of its path, so that concurrent
simulations spread over the tree instead of all descending the same path. The effective
statistics are N' = N + k, W' = W - k * virtual_loss for k simulations in flight.

Ties (equal scores) are broken by `rng.choice` over the tied children in creation order, so
the same seed gives the same choices.
"""

from __future__ import annotations

import asyncio
import math
import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

from alphazero_llm.mcts.proposers import Partial

if TYPE_CHECKING:
    from alphazero_llm.mcts.evaluate import LeafEvaluation

NodeDirection = Literal["root", "right", "wrong", "student"]
PATH_CODE = {"right": "1", "wrong": "0", "student": "s"}
# Scores closer than this are a tie: floating-point noise must not decide between equal children.
TIE_EPSILON = 1e-12


@dataclass(eq=False)
class Node:
    """One partial solution. Mutable: the search updates its statistics. Compared by identity."""

    id: int
    step: str
    state: str
    parent: Node | None
    direction: NodeDirection
    depth: int
    proposer: str
    producers: tuple[str, ...] = ()  # every proposer that produced this step (merged duplicates)
    source: str = ""  # "student", "teacher" or "reference" ("" at the root)
    token_ids: tuple[int, ...] = ()
    state_ids: tuple[int, ...] = ()
    code: str = ""
    prior: float = 1.0
    children: list[Node] = field(default_factory=list)
    visits: int = 0
    value_sum: float = 0.0
    in_flight: int = 0  # simulations holding a virtual loss on this node
    terminal: bool = False
    pre: float = 0.0  # the PRE of this node's step, given the question and the earlier steps
    evaluation: LeafEvaluation | None = None  # the evaluator's verdict on this node as a leaf, once asked
    expanded: bool = False
    expand_attempts: int = 0
    # Set while an expansion is in flight, so that a concurrent simulation waits for it
    # instead of expanding the same node twice.
    expanding: asyncio.Event | None = None

    @property
    def q(self) -> float:
        return self.value_sum / self.visits if self.visits else 0.0

    @property
    def is_leaf(self) -> bool:
        return not self.children

    @property
    def partial(self) -> Partial:
        return Partial(self.state, self.state_ids)

    def path(self) -> list[Node]:
        """The nodes from the root to this one, both included."""
        nodes: list[Node] = []
        node: Node | None = self
        while node is not None:
            nodes.append(node)
            node = node.parent
        return nodes[::-1]

    def iter_subtree(self) -> Iterator[Node]:
        """Depth-first, children in creation order."""
        stack = [self]
        while stack:
            node = stack.pop()
            yield node
            stack.extend(reversed(node.children))


def new_root() -> Node:
    """The empty solution (the question is the prompt, not part of the solution text)."""
    return Node(id=0, step="", state="", parent=None, direction="root", depth=0, proposer="")


def teacher_step_text(parent_state: str, line: str) -> str:
    """A proposed line (a teacher's or the reference's) as it enters the solution: on a line of its own,
    ending in a line break, as the student's own lines end. A student step enters as sampled."""
    separator = "\n" if parent_state and not parent_state.endswith("\n") else ""
    return f"{separator}{line}\n"


# --- the formulas ---------------------------------------------------------------------------------


def ucb1_score(q: float, child_visits: float, parent_visits: float, c: float) -> float:
    """UCB1 (Auer et al. 2002): Q + c * sqrt(ln N_parent / N_child); +inf for an unvisited child."""
    if child_visits <= 0:
        return math.inf
    return q + c * math.sqrt(math.log(max(parent_visits, 1.0)) / child_visits)


def puct_score(q: float, prior: float, child_visits: float, parent_visits: float, c: float) -> float:
    """PUCT (AlphaZero, Silver et al. 2017): Q + c * P * sqrt(N_parent) / (1 + N_child)."""
    return q + c * prior * math.sqrt(parent_visits) / (1.0 + child_visits)


def softmax(logits: Sequence[float]) -> list[float]:
    """Numerically stable softmax; -inf logits get probability 0 (all -inf: uniform)."""
    finite = [x for x in logits if math.isfinite(x)]
    if not finite:
        return [1.0 / len(logits)] * len(logits) if logits else []
    top = max(finite)
    exps = [math.exp(x - top) if math.isfinite(x) else 0.0 for x in logits]
    total = math.fsum(exps)
    return [e / total for e in exps]


def effective_stats(node: Node, virtual_loss: float) -> tuple[float, float]:
    """(N', Q') with the virtual losses of the simulations in flight counted in."""
    n = node.visits + node.in_flight
    if n == 0:
        return 0.0, 0.0
    return float(n), (node.value_sum - node.in_flight * virtual_loss) / n


def select_child(node: Node, rule: Literal["ucb1", "puct"], c: float, virtual_loss: float, rng: random.Random) -> Node:
    """The child of `node` with the best score under `rule`; ties broken by `rng`."""
    if not node.children:
        raise ValueError("select_child on a leaf")
    parent_n = float(node.visits + node.in_flight)
    scores = []
    for child in node.children:
        n, q = effective_stats(child, virtual_loss)
        if rule == "ucb1":
            scores.append(ucb1_score(q, n, parent_n, c))
        else:
            scores.append(puct_score(q, child.prior, n, parent_n, c))
    best = max(scores)
    tied = [
        child
        for child, s in zip(node.children, scores, strict=True)
        if s == best or (math.isfinite(best) and best - s <= TIE_EPSILON)
    ]
    return tied[0] if len(tied) == 1 else rng.choice(tied)


def best_child(node: Node) -> Node:
    """The most visited child; Q breaks ties, then creation order (deterministic, no rng)."""
    return max(node.children, key=lambda ch: (ch.visits, ch.q, -ch.id))


def best_path(root: Node) -> list[Node]:
    """Most visited child at every level, from the root down to a leaf."""
    path = [root]
    while path[-1].children and any(ch.visits for ch in path[-1].children):
        path.append(best_child(path[-1]))
    return path


# --- statistics along a path ----------------------------------------------------------------------


def apply_virtual_loss(path: Sequence[Node]) -> None:
    for node in path:
        node.in_flight += 1


def backup(path: Sequence[Node], value: float, *, virtual: bool) -> None:
    """Mean-value backup: N += 1 and W += value on every node of `path`; releases its virtual loss."""
    for node in path:
        node.visits += 1
        node.value_sum += value
        if virtual:
            if node.in_flight <= 0:
                raise RuntimeError(f"virtual-loss bookkeeping broken at node {node.id}")
            node.in_flight -= 1


def release_virtual_loss(path: Sequence[Node]) -> None:
    """Undo `apply_virtual_loss` without a backup (a simulation that failed)."""
    for node in path:
        node.in_flight -= 1
