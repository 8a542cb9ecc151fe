"""Exports of trained stage checkpoints to the formats other tools read."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor

import lvg.training.base  # noqa: F401  (registers the stage hyper-parameter classes for weights-only loading)
from lvg.models.lora import kohya_name, write_lora
from lvg.training.parallel import read_checkpoint


def export_checkpoint_lora(checkpoint: str | Path, out: str | Path, dtype: torch.dtype | None = None) -> Path:
    """Write the adapters of a LoRA stage checkpoint as a musubi-tuner/kohya FramePack LoRA, without building
    the model (only the checkpoint's tensors are read).

    Args:
        checkpoint: a stage ``.ckpt`` or sharded checkpoint directory of a run with ``lora:`` set.
        out: output ``.safetensors``.
        dtype: cast the A/B matrices (e.g. ``torch.bfloat16``).
    """
    ckpt = read_checkpoint(checkpoint, weights=lambda name: name.endswith((".lora_down.weight", ".lora_up.weight")))
    lora = ckpt.get("hyper_parameters", {}).get("lora")
    if lora is None:
        raise ValueError(f"{checkpoint} was not trained with LoRA (its hyper-parameters have no `lora`).")
    alpha = float(lora["alpha"] if isinstance(lora, dict) else lora.alpha)
    layers: dict[str, dict[str, Tensor]] = {}
    for key, tensor in ckpt["state_dict"].items():
        for field in ("lora_down", "lora_up"):
            suffix = f".{field}.weight"
            if key.startswith("dit.") and key.endswith(suffix):
                layers.setdefault(key.removeprefix("dit.").removesuffix(suffix), {})[field] = tensor
    if not layers:
        raise ValueError(f"{checkpoint} holds no LoRA tensors (dit.<path>.lora_down.weight).")
    state = {}
    for path, tensors in layers.items():
        for field, tensor in tensors.items():
            state[f"{kohya_name(path)}.{field}.weight"] = (tensor.to(dtype) if dtype else tensor).contiguous()
        state[f"{kohya_name(path)}.alpha"] = torch.tensor(alpha)
    return write_lora(state, out)
