#!/usr/bin/env bash
# The second venv of the tests: verifiers 0.4.0 (the current release, only verifiers.v1) beside this project,
# for tests/test_vf_eval_v1_e2e.py. Also fetches uv and the wheels of the chat programs that the null harness of
# 0.4.0 and of 0.3.1 (the main venv's) run in a uv script environment, so that the test's uv needs no package
# index and reaches only loopback.
set -euo pipefail
cd "$(dirname "$0")/.."
rm -rf .venv-vf04
python3 -m venv .venv-vf04
py=.venv-vf04/bin/python
$py -m pip install --quiet --upgrade pip
# The local CPU build of torch first, as for the main venv, so that pip never fetches a CUDA build.
$py -m pip install --quiet torch==2.13.0
$py -m pip install --quiet . 'verifiers==0.4.0' pytest uv

# The packages a PEP 723 script declares (its `# dependencies = [...]` line), read from stdin.
script_deps='
import re, sys
print(" ".join(re.findall(r"\"([^\"]+)\"", re.search(r"# dependencies = \[(.*)\]", sys.stdin.read()).group(1))))'

deps=$($py -c 'from verifiers.v1.harnesses.utils.launch import CHAT_PROGRAM_SOURCE as s; print(s)' | $py -c "$script_deps")
$py -m pip download --quiet --dest .venv-vf04/harness-wheels $deps

# 0.3.1's null program, read from its wheel. It asks for any openai, but hands the client an `httpx.Timeout`,
# which openai 3 (whose client is httpx2) rejects with a TypeError; so its wheels are openai 2's.
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
$py -m pip download --quiet --no-deps --dest "$tmp" 'verifiers==0.3.1'
deps=$($py -c 'import sys, zipfile; print(zipfile.ZipFile(sys.argv[1]).read("verifiers/v1/harnesses/null/program.py").decode())' \
    "$tmp"/verifiers-0.3.1-*.whl | $py -c "$script_deps")
$py -m pip download --quiet --dest .venv-vf04/harness-wheels-0.3.1 $deps 'openai<3'
