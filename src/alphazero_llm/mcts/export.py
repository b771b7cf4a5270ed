"""Trees as data and as pictures: JSON, Graphviz DOT text, and a self-contained HTML page.

None of these needs the graphviz binary: the DOT text can be rendered later (`dot -Tsvg`), and
the HTML page (nested, collapsible `<details>`, no script, no external file) opens in a browser.
Every node shows its step, N, Q and direction; the best path is highlighted.

The page's stable hooks, for tools and tests that read it: each node is one `<details>` with
`data-node-id` (the node's id), its class is the node's direction plus `best` on the best path;
the statistics line (`id="stats"`) carries `data-nodes` (the tree's node count) and
`data-best-path` (the best path's ids, space-separated, root first).
"""

from __future__ import annotations

import dataclasses
import html
import json
from typing import Any

from alphazero_llm.mcts.search import SearchResult
from alphazero_llm.mcts.tree import Node

_COLOURS = {"root": "#dddddd", "right": "#c8f0c8", "wrong": "#f5c6c6", "student": "#c8dcf5"}


def node_dict(node: Node) -> dict[str, Any]:
    """One node and its subtree as plain data (ids are creation order, stable for a given seed)."""
    return {
        "id": node.id,
        "step": node.step,
        "direction": node.direction,
        "code": node.code,
        "depth": node.depth,
        "proposer": node.proposer,
        "producers": list(node.producers),
        "visits": node.visits,
        "value_sum": node.value_sum,
        "q": node.q,
        "prior": node.prior,
        "terminal": node.terminal,
        "source": node.source,
        "token_ids": list(node.token_ids),
        "pre": node.pre,
        "evaluation": None if node.evaluation is None else dataclasses.asdict(node.evaluation),
        "children": [node_dict(child) for child in node.children],
    }


def to_dict(result: SearchResult) -> dict[str, Any]:
    stats = result.stats
    return {
        "problem": dataclasses.asdict(result.problem),
        "best_path": [n.id for n in result.best_path],
        "best_text": result.best_text,
        "best": dataclasses.asdict(result.best),
        "best_correct": result.best_correct,
        "stats": dataclasses.asdict(stats),
        "trajectories": [dataclasses.asdict(t) for t in result.trajectories],
        "tree": node_dict(result.root),
    }


def to_json(result: SearchResult, indent: int | None = 1) -> str:
    return json.dumps(to_dict(result), indent=indent, ensure_ascii=False)


def _label(node: Node, width: int = 48) -> str:
    step = node.step if len(node.step) <= width else node.step[: width - 1] + "…"
    head = "question" if node.direction == "root" else f"{node.direction} #{node.id}"
    tail = " ■" if node.terminal else ""
    return f"{head}{tail}\n{step}\nN={node.visits} Q={node.q:.3f}"


def _dot_escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def to_dot(result: SearchResult, max_nodes: int = 500) -> str:
    """Graphviz DOT text; the best path is drawn bold red. Trees over `max_nodes` keep visited nodes only."""
    chosen = {n.id for n in result.best_path}
    nodes = list(result.root.iter_subtree())
    if len(nodes) > max_nodes:
        nodes = [n for n in nodes if n.visits > 0][:max_nodes]
    kept = {n.id for n in nodes}
    lines = ["digraph mcts {", '  node [shape=box, style="rounded,filled", fontname="Helvetica", fontsize=10];']
    for n in nodes:
        border = ', color="#cc0000", penwidth=3' if n.id in chosen else ""
        lines.append(f'  n{n.id} [label="{_dot_escape(_label(n))}", fillcolor="{_COLOURS[n.direction]}"{border}];')
    for n in nodes:
        if n.parent is not None and n.parent.id in kept:
            edge = ' [color="#cc0000", penwidth=3]' if n.id in chosen and n.parent.id in chosen else ""
            lines.append(f"  n{n.parent.id} -> n{n.id}{edge};")
    lines.append("}")
    return "\n".join(lines) + "\n"


_CSS = """
body{font-family:system-ui,sans-serif;font-size:14px;margin:1.5em}
details{margin-left:1.4em;border-left:1px dotted #999;padding-left:.4em}
summary{cursor:pointer;padding:2px 4px;border-radius:4px;margin:2px 0;list-style-position:outside}
.root{background:#ddd}.right{background:#c8f0c8}.wrong{background:#f5c6c6}.student{background:#c8dcf5}
.best>summary{outline:3px solid #c00;font-weight:bold}
.meta{color:#444;font-family:monospace;margin-left:.6em}
pre{background:#f6f6f6;padding:.6em;white-space:pre-wrap}
"""


def _html_node(node: Node, chosen: set[int]) -> str:
    best = " best" if node.id in chosen else ""
    flag = " ■ terminal" if node.terminal else ""
    hre = "" if node.evaluation is None or node.evaluation.hre is None else f" HRE={node.evaluation.hre:g}"
    meta = f"{node.direction} N={node.visits} Q={node.q:.3f} P={node.prior:.2f}{hre}{flag}"
    step = html.escape(node.step or "(question)")
    # Only the best path starts unfolded, so that a large tree stays readable.
    opened = " open" if node.id in chosen else ""
    inner = "".join(_html_node(child, chosen) for child in node.children)
    return (
        f'<details class="{node.direction}{best}" data-node-id="{node.id}"{opened}>'
        f'<summary class="{node.direction}">{step}<span class="meta">{html.escape(meta)}</span></summary>'
        f"{inner}</details>"
    )


def to_html(result: SearchResult) -> str:
    """A self-contained HTML page: question, best answer, statistics and the collapsible tree."""
    chosen = {n.id for n in result.best_path}
    best_path = " ".join(str(n.id) for n in result.best_path)
    s = result.stats
    summary = (
        f"nodes {s.nodes}, max depth {s.max_depth}, mean branching {s.mean_branching:.2f}, "
        f"iterations {s.iterations}, proposer calls {sum(s.proposer_calls.values())} "
        f"(failed {sum(s.proposer_failures.values())}), tokens {s.proposer_tokens}, wall {s.wall_time_s:.2f}s"
    )
    verdict = "correct" if result.best_correct else "not correct"
    problem = result.problem
    return (
        '<!DOCTYPE html><html><head><meta charset="utf-8"><title>MCTS tree</title>'
        f"<style>{_CSS}</style></head><body>"
        f"<h2>Question</h2><pre>{html.escape(problem.question)}</pre>"
        f"<h2>Best path ({verdict}; gold {html.escape(problem.gold)})</h2><pre>{html.escape(result.best_text)}</pre>"
        f'<p id="stats" data-nodes="{s.nodes}" data-best-path="{best_path}">{html.escape(summary)}</p>'
        "<p>Green: right step, red: wrong step, blue: student step; outlined: the best path.</p>"
        f"{_html_node(result.root, chosen)}</body></html>\n"
    )
