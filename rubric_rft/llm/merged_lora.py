"""A LoRA policy with its adapters folded into its weights while it generates, and its weights exactly restored.

An unmerged LoRA layer costs a generated token four small operations more than a plain linear layer (dropout, A,
B, the scaled add); with every linear layer adapted, that Python and kernel overhead dominates a small model's
decoding on a CPU. Folding the adapters in (W + scale·BA, what PEFT's `merge_adapter` does) removes it. PEFT's
unmerge subtracts the delta back, which leaves the frozen weights off by rounding after every fold; here the
folded weight is a new tensor, swapped in and out, so the frozen weights stay bit for bit what they were and a
resumed run stays the same as one that never stopped. The adapters are switched off while folded, so the
model computes W + scale·BA once, not twice.

Only plain LoRA linear layers fold this way (no DoRA, no quantized or sharded base weights); for anything else the
model is used as it is.
"""

from __future__ import annotations

import contextlib

import torch


@contextlib.contextmanager
def merged_lora(model):
    """`model` computing what it computes now, with its LoRA adapters folded into its weights (see the module
    docstring); `model` itself, unchanged, where they cannot be folded."""
    layers = _foldable_layers(model)
    if not layers:
        yield model
        return
    swapped = []
    try:
        for layer, adapters in layers:
            weight = layer.get_base_layer().weight
            folded = weight.data.clone()
            for adapter in adapters:
                folded += layer.get_delta_weight(adapter).to(folded.dtype)
            swapped.append((weight, weight.data))
            weight.data = folded
        with model.disable_adapter():
            yield model
    finally:
        for weight, original in swapped:
            weight.data = original


def _foldable_layers(model) -> list[tuple[object, list[str]]]:
    """Each LoRA linear layer with its active adapters, or [] when the model is not a LoRA model whose every adapted
    layer can be folded exactly."""
    if not hasattr(model, "disable_adapter") or getattr(model, "_adapters_disabled", False):
        return []
    from peft.tuners.lora import Linear, LoraLayer
    from transformers.integrations.deepspeed import is_deepspeed_zero3_enabled

    if is_deepspeed_zero3_enabled():
        return []
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
