"""Examples per hour on this machine: one process with 2 torch threads against 2 processes (torchrun, gloo)
with 1 thread each, on the same questions; and, to say what limits the ratio, one process with 1 thread.

    GSM8K_PATH=../shared/data/gsm8k python bench/bench_ddp.py [--examples 8] [--repeats 3] [--dataset-path DIR]

Every arm runs the real `train_vllm.py` on the CPU with the embedded SmolLM2 student, `--reference-teacher
only`, no rollouts and no evaluation, the same seed and `--num-examples` (so the same global examples: the
question of example g does not depend on the world size), in a fresh checkpoint directory each time, the arms
interleaved. Timed: the whole command, start to exit, so each arm's fixed cost (imports, the model load: once
per process, concurrently) is in its figure. Prints, per arm, the median wall time over the repeats, examples
per hour, each process's peak RSS (VmHWM, read from /proc while it runs), and the median of the examples' own
times (`time_s` in metrics.jsonl: one example's search, loss and backward); for 2 processes, also the mean time
a round's faster rank waits for the slower one. Then three ratios of examples per hour: 2 processes / 1 process
with 2 threads (the goal's figure), 1 process with 2 threads / 1 thread (what a second thread buys), and 2
processes / 1 process with 1 thread (what a second process buys; 2.0 would be perfect).
"""

from __future__ import annotations

import argparse
import json
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


ARMS = ((1, 2), (2, 1), (1, 1))  # (processes, torch threads per process)


@dataclass(frozen=True)
class Timing:
    wall_s: float
    peak_rss_mib: list[float]  # per training process
    example_s: list[float]  # each example's own time (metrics.jsonl `time_s`), in example order
    round_wait_s: list[float]  # per round of several ranks: the slowest example's time minus the fastest's


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


def timed_run(processes: int, threads: int, examples: int, dataset_path: str | None) -> Timing:
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
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
        lines = (Path(tmp) / "run" / "metrics.jsonl").read_text(encoding="utf-8").splitlines()
    example_s = [json.loads(line)["time_s"] for line in lines]
    rounds = [example_s[i : i + processes] for i in range(0, len(example_s), processes)]
    waits = [max(r) - min(r) for r in rounds] if processes > 1 else []
    return Timing(wall, sorted(peaks.values(), reverse=True)[:processes], example_s, waits)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--examples", type=int, default=8, help="examples per run (even, so both arms do whole rounds)")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--dataset-path", default=None, help="local GSM8K (default: $GSM8K_PATH, else the hub)")
    args = p.parse_args()
    timings: dict[tuple[int, int], list[Timing]] = {arm: [] for arm in ARMS}
    for repeat in range(args.repeats):
        for arm in ARMS:  # interleaved, so drift in the machine's speed hits every arm alike
            timing = timed_run(*arm, args.examples, args.dataset_path)
            timings[arm].append(timing)
            print(f"repeat {repeat + 1}: {arm[0]} process(es) x {arm[1]} thread(s): {timing.wall_s:.1f} s, "
                  f"examples {', '.join(f'{t:.1f}' for t in timing.example_s)} s, "
                  f"peak RSS {', '.join(f'{r:.0f}' for r in timing.peak_rss_mib)} MiB", flush=True)  # fmt: skip
    rate = {}
    for (processes, threads), runs in timings.items():
        wall = statistics.median(t.wall_s for t in runs)
        rate[processes, threads] = args.examples / wall * 3600
        peak = max(max(t.peak_rss_mib) for t in runs)
        per_example = statistics.median(s for t in runs for s in t.example_s)
        waits = [w for t in runs for w in t.round_wait_s]
        wait = f", a round's faster rank waits {statistics.mean(waits):.1f} s on average" if waits else ""
        print(f"{processes} process(es) x {threads} thread(s): median {wall:.1f} s for {args.examples} examples, "
              f"{rate[processes, threads]:.0f} examples/hour, median {per_example:.1f} s per example{wait}, "
              f"peak RSS per process {peak:.0f} MiB")  # fmt: skip
    print(f"ratio 2 processes x 1 thread / 1 process x 2 threads: {rate[2, 1] / rate[1, 2]:.2f}x (the goal: 1.6x)")
    print(f"ratio 1 process x 2 threads / 1 process x 1 thread: {rate[1, 2] / rate[1, 1]:.2f}x (a second thread)")
    print(f"ratio 2 processes x 1 thread / 1 process x 1 thread: {rate[2, 1] / rate[1, 1]:.2f}x (a second process)")


if __name__ == "__main__":
    main()
