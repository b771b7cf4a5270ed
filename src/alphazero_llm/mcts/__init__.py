"""Monte Carlo Tree Search over reasoning steps: `search(...)` builds one tree per problem.

Modules: `tree` (nodes, UCB1/PUCT, backup), `search` (the loop), `evaluate` (the one source of
values), `proposers` (the LLM protocols and the teacher ensemble's adapter), `export` (JSON,
Graphviz DOT, HTML).
"""

from alphazero_llm.mcts.evaluate import ConstantStepScorer, Evaluator, LeafEvaluation, leaf_value, path_pre
from alphazero_llm.mcts.proposers import Partial, ProposedStep, Proposer, Proposers
from alphazero_llm.mcts.search import SearchResult, TreeStats, search
from alphazero_llm.mcts.tree import Node

__all__ = [
    "ConstantStepScorer",
    "Evaluator",
    "LeafEvaluation",
    "Node",
    "Partial",
    "ProposedStep",
    "Proposer",
    "Proposers",
    "SearchResult",
    "TreeStats",
    "leaf_value",
    "path_pre",
    "search",
]
