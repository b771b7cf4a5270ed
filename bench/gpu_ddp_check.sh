#!/usr/bin/env bash
# Two-GPU check of data-parallel training: `torchrun --nproc-per-node 2 train_vllm.py` on CUDA (NCCL, one GPU
# per rank), the embedded student and `--reference-teacher only` (no key, no network), 2 examples: one round,
# one averaged optimiser step, one checkpoint. Passes when both ranks report byte-identical adapters in
# ranks.jsonl. Needs a machine with at least 2 GPUs; PYTHON picks the interpreter (default: python on PATH);
# extra arguments go to train_vllm.py (e.g. --student meta-llama/Llama-3.2-3B-Instruct).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python}"

gpus=$("$PYTHON" -c 'import torch; print(torch.cuda.device_count())')
if [ "$gpus" -lt 2 ]; then
    echo "gpu_ddp_check.sh: needs 2 GPUs, found $gpus" >&2
    exit 2
fi
out=$(mktemp -d)
timeout 480 "$PYTHON" -m torch.distributed.run --nproc-per-node 2 train_vllm.py --device cuda --student embedded \
    --reference-teacher only --no-rollout --eval-size 0 --num-examples 2 --save-every 2 \
    --checkpoint-dir "$out/run" "$@"
"$PYTHON" - "$out/run/ranks.jsonl" <<'PY'
import json, sys
(check,) = [json.loads(line) for line in open(sys.argv[1])]
digests = check["adapter_sha256"]
assert check["world_size"] == 2 and len(set(digests)) == 1, digests
print(f"gpu_ddp_check: 2 ranks, one step, identical adapters (sha256 {digests[0][:16]})")
PY
