#!/usr/bin/env bash
# Build .whl/: the wheels scripts/gpu_check.sh needs on a GPU machine that has no package registry. That machine
# already has torch, transformers, accelerate, peft, numpy, pandas, pyarrow, fsspec, huggingface_hub, httpx, anyio,
# tokenizers, safetensors, ninja, einops, msgpack, py-cpuinfo and nvidia-ml-py; these are the rest of what
# rubric_rft and scripts/train_grpo.py import, for Python 3.12 on x86-64 Linux (about 10 MiB in all).
#   bash scripts/gpu_wheels.sh        # here, with pip and a registry; rerun to rebuild from scratch
# DeepSpeed ships only a source archive: it is built here into a pure-Python wheel (DS_BUILD_OPS=0, no compiled
# ops; DeepSpeed picks its accelerator at run time and compiles any op it needs there). Building imports torch.
set -euo pipefail
cd "$(dirname "$0")/.."
WHEELS=(
  trl==1.16.0
  datasets==5.2.0 dill==0.4.1 multiprocess==0.70.19
  pydantic==2.13.4 pydantic-core==2.46.4 annotated-types==0.7.0 typing-inspection==0.4.2
  openai==3.57.0 httpx2==2.16.2 httpcore2==2.16.2 truststore==0.10.5 jiter==0.19.0 sniffio==1.3.1
  hjson==3.1.0
  gguf==0.19.0  # a declared dependency (GGUF model conversion); not imported on the checked paths
)
exclude="$(git rev-parse --git-path info/exclude)"
grep -qx '/.whl/' "$exclude" 2>/dev/null || echo '/.whl/' >> "$exclude"  # never committed, carried by `run`
rm -rf .whl
platforms=()
for tag in manylinux_2_28 manylinux_2_27 manylinux_2_17 manylinux2014 manylinux1; do
  platforms+=(--platform "${tag}_x86_64")
done
python3 -m pip download --quiet --disable-pip-version-check --no-deps --only-binary=:all: --python-version 3.12 \
  --implementation cp "${platforms[@]}" -d .whl "${WHEELS[@]}"
DS_BUILD_OPS=0 python3 -m pip wheel --quiet --disable-pip-version-check --no-deps --no-build-isolation \
  -w .whl deepspeed==0.19.8
ls -1 .whl
du -sh .whl
