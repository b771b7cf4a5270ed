"""Data-parallel training (training.distributed): the collectives on a real 2-process gloo group, the evaluation's
sharding, and real 2-process train_vllm.py runs under torchrun (CPU, gloo, `--reference-teacher only`):

(a) after 2 optimiser steps the two ranks' adapters are byte-identical;
(b) one 2-process step over questions {A, B} equals one single-process step over them with 2-way gradient
    accumulation, within 1e-5 on every adapter tensor (and the same pre-clip gradient norm);
(c) killing one rank, or one rank raising, stops the other within the timeout, naming the rank (and the error);
    --resume completes, and metrics.jsonl has exactly one line per example;
(d) a 2-process checkpoint resumed in 1 process, and a 1-process checkpoint resumed in 2, train on the next
    questions of the global order;
and the multi-machine launch, by torchrun (--nnodes 2, c10d rendezvous) and by accelerate (--num_machines 2), with
both "machines" on this one.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file
from test_train_cli import MINI, REPO_ROOT, offline_env

from alphazero_llm.config import load_config, override
from alphazero_llm.data import dataset_splits
from alphazero_llm.training import distributed
from alphazero_llm.training.cli import build_parser
from alphazero_llm.training.evaluation import EvalResult, evaluate_greedy, merge_results, shard_rows
from alphazero_llm.training.sampler import QuestionSampler
from alphazero_llm.training.settings import settle

SEED = 7
RUN_TIMEOUT_S = 600
DIST_TIMEOUT_S = 60  # the kill test's configured collective timeout


# --- pure parts -------------------------------------------------------------------------------------


def test_the_launcher_environment_names_the_rank():
    assert distributed.from_environment({}) == distributed.Dist()
    assert distributed.from_environment({"WORLD_SIZE": "1", "RANK": "0"}).enabled is False
    dist = distributed.from_environment({"WORLD_SIZE": "4", "RANK": "3", "LOCAL_RANK": "1"})
    assert (dist.rank, dist.world_size, dist.local_rank, dist.is_main) == (3, 4, 1, False)
    with pytest.raises(ValueError, match="rank 4 is not in a world of 4"):
        distributed.Dist(rank=4, world_size=4)


def test_rate_limits_are_split_across_ranks():
    config = load_config()
    settings = settle(build_parser(config).parse_args([]), config, "cpu", env={}, has_vllm=False)
    limits = settings.config.teachers.client.rate_limits
    assert distributed.share_rate_limits(settings, 1) is settings
    shared = distributed.share_rate_limits(settings, 4).config.teachers.client.rate_limits
    assert limits, "the shipped config rate-limits at least one provider"
    for provider, limit in limits.items():
        assert shared[provider].requests_per_minute == pytest.approx(limit.requests_per_minute / 4)
        assert shared[provider].burst == max(1, limit.burst // 4)


def test_shards_are_whole_batches_and_merge_back_in_order():
    assert shard_rows(19, 4, 0, 2) == [0, 1, 2, 3, 8, 9, 10, 11, 16, 17, 18]
    assert shard_rows(19, 4, 1, 2) == [4, 5, 6, 7, 12, 13, 14, 15]
    assert shard_rows(3, 4, 1, 2) == []
    parts = [(idx, EvalResult(tuple(i % 3 == 0 for i in idx), tuple(True for _ in idx))) for idx in
             (shard_rows(19, 4, r, 3) for r in range(3))]  # fmt: skip
    merged = merge_results(parts, 19)
    assert merged.correct_flags == tuple(i % 3 == 0 for i in range(19))
    with pytest.raises(ValueError, match="not each of 20 rows once"):
        merge_results(parts, 20)


class BatchSensitiveSampler:
    """A greedy 'model' whose answer to a prompt depends on the whole batch it is generated in (as padding does),
    so a sharded evaluation equals a single-process one only when the batches are the same."""

    class Tokenizer:
        def decode(self, ids: list[int], skip_special_tokens: bool = True) -> str:
            return f"The answer is {sum(ids)}.\n#### {sum(ids)}"

    tokenizer = Tokenizer()

    def prompt_ids(self, chat: list[dict]) -> list[int]:
        return [len(chat[-1]["content"])]

    def sample_ids(self, prompts: list[list[int]], sampling) -> list[list[list[int]]]:
        width = max(len(p) for p in prompts) + len(prompts)  # the batch's shape
        return [[[p[0] % 7, width]] for p in prompts]


def test_a_sharded_evaluation_equals_one_process():
    # Right for even rows generated in a batch of 8 (width 9), wrong otherwise.
    golds = [(n + 1) % 7 + 9 if n % 2 == 0 else 0 for n in range(19)]
    rows = [{"question": "q" * (n + 1), "answer": str(golds[n]), "info": {"solution": "s"}} for n in range(19)]
    whole = evaluate_greedy(BatchSensitiveSampler(), rows, "sys", 16, batch_size=8, progress=False)
    parts = []
    for rank in range(2):
        mine = shard_rows(len(rows), 8, rank, 2)
        parts.append((mine, evaluate_greedy(BatchSensitiveSampler(), [rows[i] for i in mine], "sys", 16,
                                            batch_size=8, progress=False)))  # fmt: skip
    merged = merge_results(parts, len(rows))
    assert merged == whole and merged.texts == whole.texts
    assert any(whole.correct_flags) and not all(whole.correct_flags)


# --- the collectives on a real 2-process gloo group -------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _collectives_worker(rank: int, port: int, out: str) -> None:
    os.environ.update(
        MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE="2", LOCAL_RANK=str(rank)
    )
    dist = distributed.init("cpu", timeout_s=60)
    try:
        a = torch.nn.Parameter(torch.zeros(2, 3))
        b = torch.nn.Parameter(torch.zeros(4))
        frozen = torch.nn.Parameter(torch.zeros(1), requires_grad=False)
        a.grad = torch.full((2, 3), float(rank + 1))  # rank 0: 1, rank 1: 2
        if rank == 0:
            b.grad = torch.arange(4.0)  # rank 1 ran no example: no grad, counts as zeros
        distributed.average_gradients([a, b, frozen], dist, scale=0.5)
        same = distributed.check_identical([torch.ones(3)], dist)
        try:
            distributed.check_identical([torch.full((3,), float(rank))], dist)
            diverged = ""
        except distributed.RanksDiverged as exc:
            diverged = str(exc)
        result = {
            "a": a.grad.tolist(),
            "b": b.grad.tolist(),
            "same": same,
            "diverged": diverged,
            "gathered": distributed.all_gather({"rank": rank}, dist),
            "any": distributed.any_rank(rank == 1, dist),
        }
        Path(out, f"rank{rank}.json").write_text(json.dumps(result))
    finally:
        distributed.shutdown(dist)


def test_gradients_are_averaged_and_divergence_is_caught_on_two_processes(tmp_path: Path):
    torch.multiprocessing.spawn(_collectives_worker, args=(free_port(), str(tmp_path)), nprocs=2, join=True)
    results = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    for result in results:
        assert result["a"] == [[1.5] * 3] * 2  # (1 + 2) x 0.5
        assert result["b"] == [0.0, 0.5, 1.0, 1.5]  # (arange + zeros) x 0.5
        assert len(set(result["same"])) == 1
        assert "rank(s) [1] differs from rank 0's" in result["diverged"]
        assert result["gathered"] == [{"rank": 0}, {"rank": 1}]
        assert result["any"] is True


# --- real runs under torchrun ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def ddp_config(tmp_path_factory: pytest.TempPathFactory, toy_config: Path) -> Path:
    """The toy config with a learning rate large enough (1e-3, no warm-up) that a wrong gradient moves the
    adapter far more than 1e-5, and a short collective timeout for the kill test."""
    out = tmp_path_factory.mktemp("ddp_config")
    for name in ("models.yaml", "teacher_models.yaml"):
        shutil.copy(toy_config / name, out / name)
    training = yaml.safe_load((toy_config / "training.yaml").read_text(encoding="utf-8"))
    training["optimizer"].update(learning_rate=1.0e-3, warmup_steps=0)
    training["run"]["dist_timeout_s"] = DIST_TIMEOUT_S
    (out / "training.yaml").write_text(yaml.safe_dump(training), encoding="utf-8")
    return out


def with_accumulation(config: Path, steps: int, tmp: Path) -> Path:
    out = tmp / f"config_accumulate_{steps}"
    shutil.copytree(config, out)
    training = yaml.safe_load((out / "training.yaml").read_text(encoding="utf-8"))
    training["optimizer"]["gradient_accumulation_steps"] = steps
    (out / "training.yaml").write_text(yaml.safe_dump(training), encoding="utf-8")
    return out


def train_args(smollm_dir: Path, config: Path, out: Path, num_examples: int, *flags: str) -> list[str]:
    return [
        "train_vllm.py", "--config", str(config), "--student", str(smollm_dir), "--reference-teacher", "only",
        "--dataset-path", str(MINI), "--dev-size", "2", "--device", "cpu", "--no-rollout", "--eval-size", "0",
        "--num-examples", str(num_examples), "--save-every", "2", "--seed", str(SEED), "--checkpoint-dir", str(out),
        *flags,
    ]  # fmt: skip


TORCHRUN = str(Path(sys.executable).parent / "torchrun")


def torchrun(args: list[str]) -> list[str]:
    return [TORCHRUN, "--nproc-per-node", "2", "--master-addr", "127.0.0.1", "--master-port", str(free_port()),
            *args]  # fmt: skip


def env_one_thread() -> dict[str, str]:
    return {**offline_env(), "OMP_NUM_THREADS": "1"}


def run(cmd: list[str]) -> subprocess.CompletedProcess[str]:
    if cmd[0] == "train_vllm.py":
        cmd = [sys.executable, *cmd]
    proc = subprocess.run(cmd, cwd=REPO_ROOT, env=env_one_thread(), capture_output=True, text=True,
                          timeout=RUN_TIMEOUT_S)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-5000:]
    return proc


def rank_checks(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "ranks.jsonl").read_text(encoding="utf-8").splitlines()]


def metrics(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text(encoding="utf-8").splitlines()]


def adapter(checkpoint: Path) -> dict[str, torch.Tensor]:
    return load_file(str(checkpoint / "adapter" / "adapter_model.safetensors"))


def global_order(count: int) -> list[int]:
    """The question indices of examples 0..count-1, by the library's own sampler over the run's training rows."""
    training = override(load_config().training, {"dataset.path": str(MINI), "dataset.num_dev_examples": 2})
    size = len(dataset_splits(training.dataset, SEED).train)
    sampler = QuestionSampler(size, SEED)
    return [sampler.at(example) for example in range(count)]


@pytest.fixture(scope="module")
def two_process_run(smollm_dir: Path, ddp_config: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("ddp") / "run"
    run(torchrun(train_args(smollm_dir, ddp_config, out, 4)))
    return out


@pytest.mark.slow
def test_two_ranks_hold_byte_identical_adapters(two_process_run: Path):
    checks = rank_checks(two_process_run)
    assert [c["step"] for c in checks] == [2, 4]  # two optimiser steps, one per round of 2 examples
    for check in checks:
        rank0, rank1 = check["adapter_sha256"]
        assert check["world_size"] == 2 and rank0 == rank1
    assert checks[0]["adapter_sha256"] != checks[1]["adapter_sha256"]  # the second step moved it
    records = metrics(two_process_run)
    assert [(r["step"], r["rank"]) for r in records] == [(1, 0), (2, 1), (3, 0), (4, 1)]
    assert [r["question_index"] for r in records] == global_order(4)
    assert all(r["updated"] for r in records)


@pytest.mark.slow
def test_two_processes_step_as_one_process_accumulating_two(
    two_process_run: Path, smollm_dir: Path, ddp_config: Path, tmp_path: Path
):
    single = tmp_path / "single"
    run(train_args(smollm_dir, with_accumulation(ddp_config, 2, tmp_path), single, 2))
    ddp, one = adapter(two_process_run / "checkpoint-2"), adapter(single / "checkpoint-2")
    assert ddp.keys() == one.keys()
    moved = 0.0
    for name, tensor in ddp.items():
        assert torch.allclose(tensor, one[name], atol=1e-5, rtol=0), name
        moved = max(moved, float((tensor - adapter(two_process_run / "checkpoint-4")[name]).abs().max()))
    assert moved > 1e-4, "the steps must move the adapter well beyond the tolerance"
    # The pre-clip norm of the averaged gradient: scale-sensitive, where Adam's step is not.
    ddp_norm = metrics(two_process_run)[0]["grad_norm"]
    (one_norm,) = [r["grad_norm"] for r in metrics(single) if r["updated"]]
    assert ddp_norm == pytest.approx(one_norm, rel=1e-4)
    assert [r["question_index"] for r in metrics(single)] == global_order(2)


@pytest.mark.slow
def test_a_two_process_checkpoint_resumes_in_one_process(two_process_run: Path, smollm_dir: Path, ddp_config: Path,
                                                         tmp_path: Path):  # fmt: skip
    resumed = tmp_path / "resumed"
    resumed.mkdir()
    shutil.copytree(two_process_run / "checkpoint-2", resumed / "checkpoint-2")
    shutil.copy(two_process_run / "metrics.jsonl", resumed / "metrics.jsonl")
    run(train_args(smollm_dir, ddp_config, resumed, 4, "--resume"))
    records = metrics(resumed)
    assert [r["step"] for r in records] == [1, 2, 3, 4]
    assert [r["question_index"] for r in records] == global_order(4)
    assert [r["rank"] for r in records] == [0, 1, 0, 0]  # examples 3 and 4 by the single process


@pytest.fixture(scope="module")
def one_process_run(smollm_dir: Path, ddp_config: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """2 examples in one process: two optimiser steps, where two_process_run's checkpoint-2 took one."""
    out = tmp_path_factory.mktemp("one") / "run"
    run(train_args(smollm_dir, ddp_config, out, 2))
    return out


@pytest.mark.slow
def test_a_one_process_checkpoint_resumes_in_two_processes(
    one_process_run: Path, smollm_dir: Path, ddp_config: Path, tmp_path: Path
):
    out = tmp_path / "grown"
    shutil.copytree(one_process_run, out)
    run(torchrun(train_args(smollm_dir, ddp_config, out, 4, "--resume")))
    records = metrics(out)
    assert [r["step"] for r in records] == [1, 2, 3, 4]
    assert [r["question_index"] for r in records] == global_order(4)
    assert [r["rank"] for r in records] == [0, 0, 0, 1]  # examples 3 and 4 by two ranks
    assert all(r["updated"] for r in records)
    (check,) = rank_checks(out)
    assert check["step"] == 4 and check["world_size"] == 2
    assert len(set(check["adapter_sha256"])) == 1


ACCELERATE = str(Path(sys.executable).parent / "accelerate")


def node(rank: int, port: int, args: list[str], launcher: str = "torchrun") -> subprocess.Popen:
    """One 'machine' of two, one process each, by the README's multi-machine command: torchrun's (c10d
    rendezvous) or accelerate's (`--num_machines`, `--machine_rank`, `--main_process_ip`)."""
    if launcher == "torchrun":
        cmd = [TORCHRUN, "--nnodes", "2", "--nproc-per-node", "1", "--node-rank", str(rank), "--rdzv-backend",
               "c10d", "--rdzv-endpoint", f"127.0.0.1:{port}", "--rdzv-id", "test", *args]  # fmt: skip
    else:
        cmd = [ACCELERATE, "launch", "--multi_gpu", "--num_machines", "2", "--num_processes", "2", "--machine_rank",
               str(rank), "--main_process_ip", "127.0.0.1", "--main_process_port", str(port), "--mixed_precision",
               "no", "--dynamo_backend", "no", *args]  # fmt: skip
    return subprocess.Popen(cmd, cwd=REPO_ROOT, env=env_one_thread(), stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)  # fmt: skip


def finish(nodes: list[subprocess.Popen]) -> list[tuple[int, str]]:
    results = []
    for proc in nodes:
        try:
            _, stderr = proc.communicate(timeout=RUN_TIMEOUT_S)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        results.append((proc.returncode, stderr))
    return results


@pytest.mark.slow
@pytest.mark.parametrize("launcher", ["torchrun", "accelerate"])
def test_two_machines_train_as_two_processes(launcher: str, smollm_dir: Path, ddp_config: Path, tmp_path: Path):
    """Both "machines" on this one, sharing --checkpoint-dir: each rank is local rank 0 of its node."""
    out = tmp_path / "nodes"
    port = free_port()
    results = finish([node(rank, port, train_args(smollm_dir, ddp_config, out, 2), launcher) for rank in range(2)])
    for code, stderr in results:
        assert code == 0, stderr[-5000:]
    records = metrics(out)
    assert [(r["step"], r["rank"]) for r in records] == [(1, 0), (2, 1)]
    assert [r["question_index"] for r in records] == global_order(2)
    (check,) = rank_checks(out)
    assert check["world_size"] == 2 and len(set(check["adapter_sha256"])) == 1


@pytest.mark.slow
def test_machines_that_do_not_share_the_checkpoint_dir_are_stopped(
    two_process_run: Path, smollm_dir: Path, ddp_config: Path, tmp_path: Path
):
    """On several machines each rank reads its own --checkpoint-dir: a resume where only one holds the checkpoint
    must stop before training, naming the ranks, not train rank 1 from scratch beside rank 0's checkpoint."""
    shared, local = tmp_path / "main_machine", tmp_path / "other_machine"
    shared.mkdir()
    shutil.copytree(two_process_run / "checkpoint-2", shared / "checkpoint-2")
    port = free_port()
    flags = ("--resume", "--fresh-if-no-checkpoint")
    results = finish([node(rank, port, train_args(smollm_dir, ddp_config, directory, 4, *flags))
                      for rank, directory in enumerate((shared, local))])  # fmt: skip
    for code, stderr in results:
        assert code != 0
        assert "the ranks would start from different checkpoints (rank 0: checkpoint-2, rank 1: no checkpoint)" in (
            stderr
        ), stderr[-3000:]
    assert sorted(p.name for p in shared.iterdir()) == ["checkpoint-2"]  # nothing written, nothing lost
    assert list(local.iterdir()) == []


@pytest.mark.slow
def test_machines_whose_checkpoints_differ_are_stopped(
    two_process_run: Path, one_process_run: Path, smollm_dir: Path, ddp_config: Path, tmp_path: Path
):
    """Each machine holds a `checkpoint-2`, but not the same one (a stale copy): the adapters' digests, compared
    once the checkpoint is loaded, stop the run before it trains."""
    directories = (tmp_path / "machine0", tmp_path / "machine1")
    for directory, source in zip(directories, (two_process_run, one_process_run), strict=True):
        shutil.copytree(source / "checkpoint-2", directory / "checkpoint-2")
    port = free_port()
    results = finish([node(rank, port, train_args(smollm_dir, ddp_config, directory, 4, "--resume"))
                      for rank, directory in enumerate(directories)])  # fmt: skip
    for code, stderr in results:
        assert code != 0
        needle = "RanksDiverged: the adapter of rank(s) [1] differs from rank 0's before training"
        assert needle in stderr, stderr[-3000:]
    for directory in directories:
        assert sorted(p.name for p in directory.iterdir()) == ["checkpoint-2"]


def worker_pid(launcher: int, rank: int) -> int | None:
    """The pid of the launcher's child process that runs `rank` (its RANK environment variable)."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            environ = (entry / "environ").read_bytes().split(b"\0")
        except (OSError, IndexError, ValueError):
            continue
        if ppid == launcher and f"RANK={rank}".encode() in environ:
            return int(entry.name)
    return None


def wait_for(condition: Callable[[], bool], proc: subprocess.Popen, what: str) -> None:
    deadline = time.monotonic() + RUN_TIMEOUT_S
    while not condition():
        assert proc.poll() is None, f"the run ended before {what}: {proc.stderr.read()[-4000:] if proc.stderr else ''}"
        assert time.monotonic() < deadline, f"no {what} in time"
        time.sleep(0.1)


@pytest.mark.slow
def test_killing_one_rank_stops_the_run_and_resume_completes_it(smollm_dir: Path, ddp_config: Path, tmp_path: Path):
    out = tmp_path / "killed"
    cmd = torchrun(train_args(smollm_dir, ddp_config, out, 6))
    proc = subprocess.Popen(cmd, cwd=REPO_ROOT, env=env_one_thread(), stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)  # fmt: skip
    try:
        wait_for(lambda: (out / "checkpoint-2" / "meta.json").is_file(), proc, "first checkpoint")
        pid = worker_pid(proc.pid, 1)
        assert pid is not None, "rank 1's process not found"
        os.kill(pid, signal.SIGKILL)
        killed_at = time.monotonic()
        _, stderr = proc.communicate(timeout=DIST_TIMEOUT_S + 60)
        stopped_after = time.monotonic() - killed_at
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode != 0
    assert stopped_after < DIST_TIMEOUT_S, f"rank 0 ran on for {stopped_after:.0f} s after rank 1 died"
    assert "rank: 1" in stderr and "Signal 9 (SIGKILL)" in stderr, stderr[-3000:]
    assert not (out / "checkpoint-6").exists(), "the run finished before it was killed"
    # A save cut short stays a `.tmp-*` directory, never a `checkpoint-N`: every checkpoint is whole.
    assert all((c / "meta.json").is_file() for c in out.glob("checkpoint-*")), "a half-written checkpoint"

    run(torchrun(train_args(smollm_dir, ddp_config, out, 6, "--resume")))
    records = metrics(out)
    assert [r["step"] for r in records] == [1, 2, 3, 4, 5, 6]
    assert [r["question_index"] for r in records] == global_order(6)


def root_cause(stderr: str) -> str:
    """torchrun's failure summary: the part that names the first failed rank and prints its error file."""
    assert "Root Cause (first observed failure):" in stderr, stderr[-3000:]
    return stderr.split("Root Cause (first observed failure):", 1)[1]


@pytest.mark.slow
def test_one_rank_raising_stops_the_run_naming_it_and_resume_completes_it(
    smollm_dir: Path, ddp_config: Path, tmp_path: Path
):
    out, mark = tmp_path / "raised", tmp_path / "raised.mark"
    driver = str(REPO_ROOT / "tests" / "fixtures" / "train_with_failure.py")
    cmd = torchrun([driver, *train_args(smollm_dir, ddp_config, out, 4)[1:]])
    env = {**env_one_thread(), "FAIL_RANK": "1", "FAIL_EXAMPLE": "3", "FAIL_MARK": str(mark)}
    proc = subprocess.Popen(cmd, cwd=REPO_ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            text=True)  # fmt: skip
    try:
        wait_for(mark.exists, proc, "the injected failure")  # rank 1, example 4: the second round
        raised_at = time.monotonic()
        _, stderr = proc.communicate(timeout=DIST_TIMEOUT_S + 60)
        stopped_after = time.monotonic() - raised_at
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode != 0
    assert stopped_after < DIST_TIMEOUT_S, f"rank 0 ran on for {stopped_after:.0f} s after rank 1 raised"
    summary = root_cause(stderr)
    assert "local_rank: 1" in summary, summary
    assert "RuntimeError: injected failure in example 4 on rank 1" in summary, summary  # the error file's message
    assert "train_or_fail" in summary  # and its traceback
    assert sorted(c.name for c in out.glob("checkpoint-*")) == ["checkpoint-2"]
    assert (out / "checkpoint-2" / "meta.json").is_file()

    run(torchrun(train_args(smollm_dir, ddp_config, out, 4, "--resume")))
    records = metrics(out)
    assert [r["step"] for r in records] == [1, 2, 3, 4]
    assert [r["question_index"] for r in records] == global_order(4)
