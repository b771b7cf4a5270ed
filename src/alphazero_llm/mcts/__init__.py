"""Monte Carlo Tree Search over reasoning steps: `search(...)` builds one tree per question.

Modules: `tree` (nodes, UCB1/PUCT, backup), `search` (the loop), `evaluate` (the leaf value),
`proposers` (the LLM protocols and adapters), `export` (JSON, Graphviz DOT, HTML).
"""

from alphazero_llm.mcts.evaluate import ConstantStepScorer, Evaluator, leaf_value, path_pre
from alphazero_llm.mcts.proposers import ProposedStep, Proposer, Proposers
from alphazero_llm.mcts.search import SearchResult, Trajectory, TreeStats, search
from alphazero_llm.mcts.tree import Node

__all__ = [
    "ConstantStepScorer",
    "Evaluator",
    "Node",
    "ProposedStep",
    "Proposer",
    "Proposers",
    "SearchResult",
    "Trajectory",
    "TreeStats",
    "leaf_value",
    "path_pre",
    "search",
]
