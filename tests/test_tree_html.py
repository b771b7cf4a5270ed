"""The search trees a run saves (`training.trees.TreeWriter`): which files, when, and the HTML page as
headless Chromium renders it (the best path highlighted, every node shown)."""

from __future__ import annotations

import json
import random
import subprocess
from contextlib import ExitStack
from html.parser import HTMLParser
from pathlib import Path

import pytest
from conftest import missing
from test_mcts_search import HRE_ONLY, PROBLEM, RULES, Scripted, cfg, encode, proposers, run

from alphazero_llm.config import load_config
from alphazero_llm.mcts import ConstantStepScorer, SearchResult
from alphazero_llm.models.sampling import Sampling
from alphazero_llm.training.assembly import mcts_source
from alphazero_llm.training.cli import build_parser, main
from alphazero_llm.training.settings import settle
from alphazero_llm.training.sources import MCTSSource
from alphazero_llm.training.trees import TREES_DIR, TreeWriter

CONFIG = load_config()
CHROMIUM = Path("/usr/bin/chromium")  # Debian's package; .ci/run installs it
# Headless, offline and quiet: no sandbox (CI runs as root), no GPU, no network of its own.
CHROMIUM_FLAGS = (
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
)  # fmt: skip


def two_steps(state: str, direction: str, n: int) -> list[str]:
    """A first step, then a final one, in both directions: a tree two levels deep. The wrong first
    step holds markup characters, which the page must escape rather than render as elements."""
    if not state:
        texts = {"right": "Tom starts with 3 apples and buys 4.", "wrong": "Tom gives <away> 4 of his 3 apples & more."}
    else:
        texts = {"right": "3 + 4 = 7\n#### 7", "wrong": "3 - 4 = -1\n#### -1"}
    return [texts[direction]][:n]


def small_tree() -> SearchResult:
    return run(proposers(Scripted("t", two_steps)), cfg(num_iterations=8))


class RenderedTree(HTMLParser):
    """The page's hooks (`mcts.export`): node ids in document order, the highlighted ones, the stats line."""

    def __init__(self) -> None:
        super().__init__()
        self.nodes: list[int] = []
        self.best: list[int] = []
        self.opened: list[int] = []
        self.stats: dict[str, str | None] = {}

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        found = dict(attrs)
        if tag == "details" and found.get("data-node-id") is not None:
            node = int(found["data-node-id"] or "")
            self.nodes.append(node)
            if "best" in (found.get("class") or "").split():
                self.best.append(node)
            if "open" in found:
                self.opened.append(node)
        elif found.get("id") == "stats":
            self.stats = found


@pytest.fixture(scope="session")
def chromium() -> Path:
    if not CHROMIUM.is_file():
        missing(f"{CHROMIUM} not found (apt-get install chromium)")
    return CHROMIUM


def rendered_dom(chromium: Path, page: Path, profile: Path) -> str:
    """The DOM Chromium built from `page`, serialised (`--dump-dom`)."""
    done = subprocess.run(
        [str(chromium), *CHROMIUM_FLAGS, f"--user-data-dir={profile}", "--dump-dom", page.as_uri()],
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def test_the_page_in_chromium_highlights_exactly_the_best_path_and_shows_every_node(chromium: Path, tmp_path: Path):
    result = small_tree()
    best = [n.id for n in result.best_path]
    nodes = list(result.root.iter_subtree())
    assert len(best) == 3 and len(nodes) == result.stats.nodes == 7  # a tree worth looking at
    TreeWriter(tmp_path / TREES_DIR, html_every=1)(result, 1)

    tree = RenderedTree()
    tree.feed(rendered_dom(chromium, tmp_path / TREES_DIR / "example-000001.html", tmp_path / "profile"))

    assert tree.best == best  # document order is root first, as the path is
    assert tree.opened == best  # only the best path starts unfolded
    assert sorted(tree.nodes) == sorted(n.id for n in nodes) and len(tree.nodes) == result.stats.nodes
    assert tree.stats["data-nodes"] == str(result.stats.nodes)
    assert tree.stats["data-best-path"] == " ".join(map(str, best))


class FakePolicy(ConstantStepScorer):
    """What `MCTSSource` asks of the student policy when the search has no student steps, priors or rollouts."""

    step_sampling = Sampling(8, 1.0, 1.0)

    def encode(self, text: str) -> tuple[int, ...]:
        return encode(text)

    def prompt_ids(self, problem: object) -> tuple[int, ...]:
        return (1, 2, 3)

    def tokens_used(self) -> int:
        return 0


def names(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir())


def test_mcts_source_saves_every_tree_as_json_and_a_page_for_step_one_and_every_nth(loop, tmp_path: Path):
    trees = tmp_path / TREES_DIR
    source = MCTSSource(
        loop, lambda step: FakePolicy(), Scripted("t", two_steps), RULES, cfg(num_iterations=8, rollout=False), HRE_ONLY,
        on_search=TreeWriter(trees, html_every=2),
    )  # fmt: skip
    for step in range(3):  # the Trainer's 0-based index; the files are named by the 1-based step
        source(PROBLEM, random.Random(step), step)
    pages = ["example-000001.html", "example-000002.html"]
    assert names(trees) == sorted([*pages, "example-000001.json", "example-000002.json", "example-000003.json"])

    data = json.loads((trees / "example-000003.json").read_text(encoding="utf-8"))
    last = source.last
    assert last is not None
    assert data["problem"]["question"] == PROBLEM.question and data["problem"]["id"] == PROBLEM.id
    assert data["best_path"] == [n.id for n in last.best_path] and data["tree"]["id"] == 0
    assert data["stats"]["nodes"] == last.stats.nodes and len(data["tree"]["children"]) == 2

    # A resumed run searches example 3 again: the same names, overwritten, and no temporary file left.
    source(PROBLEM, random.Random(9), 2)
    assert names(trees) == sorted([*pages, "example-000001.json", "example-000002.json", "example-000003.json"])


def test_html_every_zero_writes_json_only(tmp_path: Path):
    writer = TreeWriter(tmp_path, html_every=0)
    result = small_tree()
    for step in (1, 10):
        writer(result, step)
    assert names(tmp_path) == ["example-000001.json", "example-000010.json"]
    with pytest.raises(ValueError, match=">= 0"):
        TreeWriter(tmp_path, html_every=-1)


def test_save_trees_every_flag_overrides_the_config_and_must_not_be_negative(capsys: pytest.CaptureFixture[str]):
    default = settle(build_parser(CONFIG).parse_args([]), CONFIG, "cpu", env={}, has_vllm=False)
    assert default.training.run.save_trees_every == CONFIG.training_on_cpu.run.save_trees_every == 10
    given = settle(build_parser(CONFIG).parse_args(["--save-trees-every", "3"]), CONFIG, "cpu", env={}, has_vllm=False)
    assert given.training.run.save_trees_every == 3
    with pytest.raises(SystemExit):
        main(["--save-trees-every", "-1"])
    assert "--save-trees-every must be >= 0" in capsys.readouterr().err


def test_the_runs_source_saves_its_trees_under_the_checkpoint_dir(loop, tmp_path: Path):
    argv = ["--reference-teacher", "only", "--checkpoint-dir", str(tmp_path), "--save-trees-every", "4"]
    settings = settle(build_parser(CONFIG).parse_args(argv), CONFIG, "cpu", env={}, has_vllm=False)
    with ExitStack() as stack:
        source, _ = mcts_source(settings, stack, loop, student=None)  # type: ignore[arg-type]  # never sampled here
    writer = source.on_search
    assert isinstance(writer, TreeWriter)
    assert (writer.directory, writer.html_every) == (tmp_path / TREES_DIR, 4)
