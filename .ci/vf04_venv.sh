#!/usr/bin/env bash
# The second venv of the tests: verifiers 0.4.0 (the current release, only verifiers.v1) beside this project,
# for tests/test_vf_eval_v1_e2e.py. Also fetches uv and the wheels of the chat program that 0.4's null harness
# runs in a uv script environment, so that the test itself needs no index (UV_NO_INDEX) and reaches only loopback.
set -euo pipefail
cd "$(dirname "$0")/.."
rm -rf .venv-vf04
python3 -m venv .venv-vf04
.venv-vf04/bin/python -m pip install --quiet --upgrade pip
# The local CPU build of torch first, as for the main venv, so that pip never fetches a CUDA build.
.venv-vf04/bin/python -m pip install --quiet torch==2.13.0
.venv-vf04/bin/python -m pip install --quiet . 'verifiers==0.4.0' pytest uv
deps=$(.venv-vf04/bin/python -c '
import re
from verifiers.v1.harnesses.utils.launch import CHAT_PROGRAM_SOURCE as source
print(" ".join(re.findall(r"\"([^\"]+)\"", re.search(r"# dependencies = \[(.*)\]", source).group(1))))')
.venv-vf04/bin/python -m pip download --quiet --dest .venv-vf04/harness-wheels $deps
