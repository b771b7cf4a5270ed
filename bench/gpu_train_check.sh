#!/usr/bin/env bash
# One-GPU check of one training example: an MCTS search whose student proposals come from vLLM, one
# GRPO step with the Trainer, the saved adapter reloaded into a fresh student and into vLLM (see
# `python bench/gpu_train_check.py --help`). Installs the project with the vllm extra when vLLM is
# missing, then runs the check with a hard 480 s cap so that it fits an 8-minute device slot.
# Arguments go to gpu_train_check.py (--model, --iterations, --quick, ...).
# PYTHON picks the interpreter (default: python on PATH).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python}"

if ! "$PYTHON" -c 'import importlib.util, sys; sys.exit(importlib.util.find_spec("vllm") is None)'; then
    echo "gpu_train_check.sh: vLLM not found; installing the project with the vllm extra (needs CUDA)" >&2
    "$PYTHON" -m pip install -e '.[vllm]'
fi

timeout 480 "$PYTHON" bench/gpu_train_check.py "$@"
