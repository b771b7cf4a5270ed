"""`python -m alphazero_llm.quickstart`: the whole evaluation path on this machine, no API key.

Serves the embedded SmolLM2-135M-Instruct with `transformers serve` on
127.0.0.1, runs the real `vf-eval alphazero-llm-trainer` against it, and stops
the server. Results land under `--output-dir` (vf-eval's layout).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path

from alphazero_llm.models.embedded import embedded_model_dir
from alphazero_llm.server import LocalServer

logger = logging.getLogger(__name__)

KEY_VAR = "ALPHAZERO_LOCAL_API_KEY"  # the loopback server ignores keys; vf-eval still wants a variable


def vf_eval_command(
    server: LocalServer,
    num_examples: int,
    rollouts: int,
    max_tokens: int,
    output_dir: Path,
    env_args: dict | None = None,
) -> list[str]:
    """The real `vf-eval` CLI, pointed at `server`; run it with `KEY_VAR` set in its environment."""
    # The CLI installed beside this interpreter (an unactivated venv), else the one on PATH.
    beside = Path(sys.executable).parent / "vf-eval"
    vf_eval = str(beside) if beside.is_file() else shutil.which("vf-eval")
    if vf_eval is None:
        raise SystemExit("vf-eval not found: install this package (pip install -e .) into this Python's venv")
    return [
        vf_eval, "alphazero-llm-trainer",
        "-m", server.model_name, "-b", server.base_url, "-k", KEY_VAR,
        "-n", str(num_examples), "-r", str(rollouts), "-t", str(max_tokens),
        "-a", json.dumps(env_args or {}), "-o", str(output_dir), "-s", "-d",
    ]  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-n", "--num-examples", type=int, default=5)
    parser.add_argument("-r", "--rollouts", type=int, default=2)
    parser.add_argument("-t", "--max-tokens", type=int, default=256)
    parser.add_argument("--dataset-path", default=None, help="GSM8K dir or JSONL (default: $GSM8K_PATH, else the hub)")
    parser.add_argument("--output-dir", type=Path, default=Path("outputs"))
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")

    args.output_dir.mkdir(parents=True, exist_ok=True)
    env_args = {"dataset_path": args.dataset_path} if args.dataset_path else {}
    with LocalServer(embedded_model_dir(), log_file=args.output_dir / "server.log") as server:
        command = vf_eval_command(server, args.num_examples, args.rollouts, args.max_tokens, args.output_dir, env_args)
        logger.info("Running: %s", " ".join(command))
        return subprocess.run(command, env={**os.environ, KEY_VAR: "local"}, check=False).returncode


if __name__ == "__main__":
    raise SystemExit(main())
