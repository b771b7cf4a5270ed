"""Examples per hour on this machine: one process with 2 torch threads against 2 processes (torchrun, gloo)
with 1 thread each, on the same questions.

    GSM8K_PATH=../shared/data/gsm8k python bench/bench_ddp.py [--examples 8] [--repeats 3] [--dataset-path DIR]

Both arms run the real `train_vllm.py` on the CPU with the embedded SmolLM2 student, `--reference-teacher only`,
no rollouts and no evaluation, the same seed and `--num-examples` (so the same global examples: the question of
example g does not depend on the world size), in a fresh checkpoint directory each time, the two arms
interleaved. Timed: the whole command, start to exit, so each arm's fixed cost (imports, the model load: once
per process, concurrently) is in its figure. Prints the medians over the repeats, examples per hour, the ratio
(2 processes / 1) and each process's peak RSS (VmHWM, read from /proc while it runs).
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Timing:
    wall_s: float
    peak_rss_mib: list[float]  # per training process


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def command(processes: int, examples: int, out: Path, dataset_path: str | None) -> list[str]:
    args = [
        "train_vllm.py", "--student", "embedded", "--reference-teacher", "only", "--device", "cpu", "--no-rollout",
        "--eval-size", "0", "--num-examples", str(examples), "--save-every", str(examples), "--seed", "7",
        "--checkpoint-dir", str(out),
    ]  # fmt: skip
    if dataset_path:
        args += ["--dataset-path", dataset_path]
    if processes == 1:
        return [sys.executable, *args]
    torchrun = str(Path(sys.executable).parent / "torchrun")
    return [torchrun, "--nproc-per-node", str(processes), "--master-addr", "127.0.0.1", "--master-port",
            str(free_port()), *args]  # fmt: skip


def _children(pid: int) -> list[int]:
    kids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1]) == pid:
                    kids.append(int(entry.name))
            except (OSError, IndexError, ValueError):
                continue
    return kids


def _peak_rss_mib(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def timed_run(processes: int, examples: int, dataset_path: str | None) -> Timing:
    threads = str(2 // processes)
    env = {**os.environ, "OMP_NUM_THREADS": threads, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    with tempfile.TemporaryDirectory() as tmp:
        cmd = command(processes, examples, Path(tmp) / "run", dataset_path)
        start = time.perf_counter()
        proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        peaks: dict[int, float] = {}
        while proc.poll() is None:
            workers = [proc.pid] if processes == 1 else _children(proc.pid)
            for pid in workers:
                rss = _peak_rss_mib(pid)
                if rss is not None:
                    peaks[pid] = max(peaks.get(pid, 0.0), rss)
            time.sleep(0.2)
        wall = time.perf_counter() - start
        stderr = proc.stderr.read() if proc.stderr else ""
        if proc.returncode != 0:
            raise SystemExit(f"{' '.join(cmd)} failed ({proc.returncode}):\n{stderr[-3000:]}")
    return Timing(wall, sorted(peaks.values(), reverse=True)[:processes])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--examples", type=int, default=8, help="examples per run (even, so both arms do whole rounds)")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--dataset-path", default=None, help="local GSM8K (default: $GSM8K_PATH, else the hub)")
    args = p.parse_args()
    timings: dict[int, list[Timing]] = {1: [], 2: []}
    for repeat in range(args.repeats):
        for processes in (1, 2):  # interleaved, so drift in the machine's speed hits both arms alike
            timing = timed_run(processes, args.examples, args.dataset_path)
            timings[processes].append(timing)
            print(f"repeat {repeat + 1}: {processes} process(es): {timing.wall_s:.1f} s, "
                  f"peak RSS {', '.join(f'{r:.0f}' for r in timing.peak_rss_mib)} MiB", flush=True)  # fmt: skip
    rate = {}
    for processes, runs in timings.items():
        wall = statistics.median(t.wall_s for t in runs)
        rate[processes] = args.examples / wall * 3600
        peak = max(max(t.peak_rss_mib) for t in runs)
        arm = f"{processes} process(es) x {2 // processes} thread(s)"
        print(f"{arm}: median {wall:.1f} s for {args.examples} examples, {rate[processes]:.0f} examples/hour, "
              f"peak RSS per process {peak:.0f} MiB")  # fmt: skip
    print(f"ratio (2 processes / 1 process): {rate[2] / rate[1]:.2f}x")


if __name__ == "__main__":
    main()
