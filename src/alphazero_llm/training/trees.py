"""A run's search trees on disk, for a user to look at: `<run dir>/trees/example-<step>.json` and `.html`.

Every search's tree is written as JSON (`mcts.export.to_dict`: the problem, the best path's ids, the
whole node tree); example 1's and every `html_every`th's also as a self-contained HTML page
(`mcts.export.to_html`). A file is named by the example's 1-based step, so a resumed run that searches
an example again overwrites that example's files: nothing is lost and nothing doubles.
"""

from __future__ import annotations

import logging
from pathlib import Path

from alphazero_llm.mcts import SearchResult
from alphazero_llm.mcts.export import to_html, to_json
from alphazero_llm.training.checkpoint import write_text_atomic

logger = logging.getLogger(__name__)

TREES_DIR = "trees"


class TreeWriter:
    """`(result, step) -> None`: writes one search's files under `directory` (module docstring).

    `html_every`: an HTML page for step 1 and every step divisible by it; 0 writes no HTML.
    """

    def __init__(self, directory: Path, html_every: int) -> None:
        if html_every < 0:
            raise ValueError(f"html_every must be >= 0 (0: no HTML pages), not {html_every}")
        self.directory = directory
        self.html_every = html_every

    def wants_html(self, step: int) -> bool:
        return self.html_every > 0 and (step == 1 or step % self.html_every == 0)

    def __call__(self, result: SearchResult, step: int) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        stem = self.directory / f"example-{step:06d}"
        write_text_atomic(stem.with_suffix(".json"), to_json(result))
        if self.wants_html(step):
            page = stem.with_suffix(".html")
            write_text_atomic(page, to_html(result))
            logger.info("example %d: search tree written to %s", step, page)
