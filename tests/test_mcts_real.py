"""The search on real parts: the SmolLM2 student (proposer, PUCT prior, PRE) and a loopback teacher server.

Three GSM8K test questions, a small budget (the CPU server answers ~10 tokens/s), trees exported
to JSON, DOT and HTML under tmp_path.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import random
import time

import pytest

from alphazero_llm.config import TeacherModelConfig, load_config, override
from alphazero_llm.data import Gsm8kSource, Problem, load_gsm8k
from alphazero_llm.mcts import search
from alphazero_llm.mcts.export import to_dot, to_html, to_json
from alphazero_llm.mcts.proposers import TeacherProposer
from alphazero_llm.models.student import StudentModel, StudentSpec
from alphazero_llm.models.teachers import TeacherEnsemble
from alphazero_llm.models.terminal import TerminalChecker
from alphazero_llm.training.assembly import student_policy
from alphazero_llm.training.sources import search_parts

pytestmark = pytest.mark.slow


def test_search_with_the_real_student_and_teacher(smollm_dir, smollm_server, gsm8k_dir, tmp_path):
    config = load_config()
    search_budget = {
        "mcts.num_iterations": 3, "mcts.max_depth": 3, "mcts.tokens_per_expansion": 8, "mcts.num_right": 1,
        "mcts.num_wrong": 1, "mcts.num_student": 1, "mcts.selection": "puct",
    }  # fmt: skip
    config = dataclasses.replace(config, training=override(config.training, search_budget))
    mcts = config.training.mcts
    problems = [Problem.from_row(r) for r in load_gsm8k("test", Gsm8kSource(path=str(gsm8k_dir)), num_examples=3)]
    student = StudentModel.load(StudentSpec(name=str(smollm_dir), device="cpu", lora=False), config.models)
    policy = student_policy(student, config, seed=0)
    terminal = TerminalChecker.rules_only(config.teachers.terminal_checker)
    teacher = TeacherModelConfig("local", "local", smollm_server.model_name, smollm_server.base_url, "LOCAL_KEY")
    client = dataclasses.replace(config.teachers.client, timeout_s=120.0, max_concurrency=4)

    async def main():
        ens = TeacherEnsemble(
            [teacher], client, config.teachers.bandit, tokens_per_expansion=8, rng=random.Random(0), env={}
        )
        async with ens:
            teachers = TeacherProposer(ens)
            proposers, evaluator = search_parts(
                policy, teachers, terminal, mcts, config.training.rewards, credit=teachers.credit
            )
            results = []
            for i, problem in enumerate(problems):
                results.append(await search(problem, proposers, evaluator, mcts, random.Random(i)))
            return results, ens.bandit.counts["local"]

    start = time.perf_counter()
    results, credited = asyncio.run(main())
    elapsed = time.perf_counter() - start
    print(f"\n3 searches in {elapsed:.1f}s")  # 46 s on this 2-core CPU when idle; timings belong in bench/
    assert credited > 0  # the bandit saw backed-up values
    for i, result in enumerate(results):
        s = result.stats
        print(
            f"q{i}: nodes {s.nodes}, depth {s.max_depth}, calls {s.proposer_calls}, failures {s.proposer_failures}, "
            f"tokens {s.proposer_tokens}, {s.wall_time_s:.1f}s; best: {result.best_text!r}"
        )
        assert result.root.visits == mcts.num_iterations
        assert s.nodes > 1 and result.trajectories
        assert all(-1.0 <= n.pre <= 1.0 for n in result.root.iter_subtree())
        assert abs(sum(c.prior for c in result.root.children) - 1.0) < 1e-6
        (tmp_path / f"tree{i}.json").write_text(to_json(result), encoding="utf-8")
        (tmp_path / f"tree{i}.dot").write_text(to_dot(result), encoding="utf-8")
        (tmp_path / f"tree{i}.html").write_text(to_html(result), encoding="utf-8")
        assert json.loads((tmp_path / f"tree{i}.json").read_text())["tree"]["visits"] == mcts.num_iterations
