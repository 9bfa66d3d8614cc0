"""The weights a policy generates with: its LoRA adapters folded in, optionally cast to a lower precision, and its
own weights exactly restored afterwards.

Folding. An unmerged LoRA layer costs a generated token four small operations more than a plain linear layer
(dropout, A, B, the scaled add). Folding the adapters in (W + scale·BA, what PEFT's `merge_adapter` does) removes
them. PEFT's unmerge subtracts the delta back, which leaves the frozen weights off by rounding after every fold;
here the folded weight is a new tensor, swapped in and out, so the frozen weights stay bit for bit what they were
and a resumed run stays the same as one that never stopped. The adapters are switched off while folded, so the
model computes W + scale·BA once, not twice. Only plain LoRA linear layers fold (no DoRA, no quantized base).

Casting. Decoding a small model on a CPU reads every weight for every token and is bound by memory traffic: with
bfloat16 copies of the weights (`dtype`) it reads half as much (see `benchmarks/rollout_engines.py` for what that
gives a GRPO step). Samples then come from the bfloat16-rounded policy, as vLLM rollouts do; the trainer's
log-probabilities stay in the training precision.

Under DeepSpeed ZeRO-3 the weights are sharded and nothing is swapped: the model is used as it is.
"""

from __future__ import annotations

import contextlib

import torch


@contextlib.contextmanager
def generation_weights(model, dtype: torch.dtype | None = None):
    """`model` computing what it computes now (up to `dtype`'s rounding), LoRA adapters folded into its weights
    and every floating weight cast to `dtype` (None: kept as it is); see the module docstring."""
    from transformers.integrations.deepspeed import is_deepspeed_zero3_enabled

    sharded = is_deepspeed_zero3_enabled()
    layers = [] if sharded else _foldable_layers(model)
    casting = dtype is not None and not sharded and any(
        p.is_floating_point() and p.dtype != dtype for p in model.parameters())
    if not layers and not casting:
        yield model
        return
    swapped = []
    try:
        folded = set()
        for layer, adapters in layers:
            weight = layer.get_base_layer().weight
            merged = weight.data.clone()
            for adapter in adapters:
                merged += layer.get_delta_weight(adapter).to(merged.dtype)
            swapped.append((weight, weight.data))
            weight.data = merged if dtype is None else merged.to(dtype)
            folded.add(weight)
        if casting:
            for parameter in model.parameters():
                if parameter not in folded and parameter.is_floating_point() and parameter.dtype != dtype:
                    swapped.append((parameter, parameter.data))
                    parameter.data = parameter.data.to(dtype)
        with model.disable_adapter() if layers else contextlib.nullcontext():
            yield model
    finally:
        for parameter, original in swapped:
            parameter.data = original


def has_native_bfloat16() -> bool:
    """Whether this CPU has bfloat16 matrix kernels (AVX512-BF16 or AMX): without them bfloat16 is emulated, slower
    than float32."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def _foldable_layers(model) -> list[tuple[object, list[str]]]:
    """Each LoRA linear layer with its active adapters, or [] when the model is not a LoRA model whose every adapted
    layer can be folded exactly."""
    if not hasattr(model, "disable_adapter") or getattr(model, "_adapters_disabled", False):
        return []
    from peft.tuners.lora import Linear, LoraLayer

    layers = []
    for module in model.modules():
        if not isinstance(module, LoraLayer):
            continue
        adapters = [a for a in module.active_adapters if a in module.lora_A]
        plain = type(module) is Linear and type(module.get_base_layer()) is torch.nn.Linear  # not quantized
        if not plain or module.merged or any(module.use_dora.get(a) for a in adapters):
            return []
        if adapters:
            layers.append((module, adapters))
    return layers
