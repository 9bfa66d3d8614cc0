"""Rollouts through TRL's vLLM integration: made to run on a CPU, and refused with a reason where they cannot.

Colocate mode. Before each generation TRL copies the policy's weights into its in-process vLLM engine, one tensor
at a time, through the engine model's `load_weights`. On a GPU that writes into the engine's parameters. vLLM's
CPU backend instead packs each linear layer's weight into a kernel layout once loading ends and drops the
original, so the per-tensor copy has nowhere to go (`'Parameter' object has no attribute 'weight_loader'`).
vLLM's own way to replace weights is its model runner's `reload_weights`, which restores each layer, loads it and
packs it again. It misses one thing: a tied LM head (SmolLM2, the tiny test model) keeps a packed copy of the
embedding that no reloaded weight touches, and without repacking it the engine samples from the old head (its
log-probs stayed 0.10 nats from the trained model's on the tiny model; 0.001 once it is repacked).

Server mode pushes the weights to the vLLM server over NCCL (vLLM's weight-transfer engine), which needs CUDA.
Without it TRL fails deep inside its client; the run is refused before the trainer is built, naming colocate as
the CPU path.
"""

from __future__ import annotations

import logging
import types

import torch
from trl import GRPOConfig, GRPOTrainer

logger = logging.getLogger(__name__)


class RolloutSettingsError(ValueError):
    """The vLLM settings ask for something this machine cannot do."""


def check_rollout_settings(args: GRPOConfig) -> None:
    """Refuse `vllm_mode: server` where training does not run on CUDA: the weights could never reach the server."""
    if not args.use_vllm or args.vllm_mode != "server":
        return
    if args.use_cpu or not torch.cuda.is_available():
        raise RolloutSettingsError(
            "use_vllm with vllm_mode: server needs a CUDA GPU: TRL pushes the policy's weights to the vLLM server "
            "over NCCL after every step, and without CUDA they would never arrive. On a CPU machine use "
            "vllm_mode: colocate (vLLM inside the training process; configs/cpu_vllm.yaml), or use_vllm: false."
        )


def use_cpu_weight_reload(trainer: GRPOTrainer) -> bool:
    """Make `trainer` sync its weights into a colocated vLLM engine that runs on the CPU; True if it needed to.
    Call it right after building the trainer (before `train`)."""
    if not trainer.use_vllm or trainer.vllm_mode != "colocate" or not _vllm_runs_on_cpu():
        return False
    trainer.vllm_generation.sync_weights = types.MethodType(_reload_weights, trainer.vllm_generation)
    return True


def _vllm_runs_on_cpu() -> bool:
    from vllm.platforms import current_platform

    return current_platform.is_cpu()


def _reload_weights(generation) -> None:
    """`VLLMGeneration.sync_weights` for a CPU engine: TRL's own walk over the (adapter-merged) parameters, fed to
    vLLM's layer-by-layer reload; then every packed layer whose weight belongs to an earlier layer (a tied LM
    head: the reload repacked only the embedding) is packed again from that weight."""
    from vllm.model_executor.layers.utils import dispatch_cpu_unquantized_gemm

    runner = generation.llm.llm_engine.model_executor.driver_worker.model_runner
    runner.reload_weights(weights_iterator=generation._iter_named_params(), is_checkpoint_format=True)
    owners = set()
    for module in runner.get_model().modules():
        weight = getattr(module, "weight", None)
        if not hasattr(module, "cpu_linear") or weight is None or not weight.numel():
            continue
        if id(weight) in owners:
            dispatch_cpu_unquantized_gemm(module, remove_weight=False)
        owners.add(id(weight))
    generation.llm.reset_prefix_cache()
