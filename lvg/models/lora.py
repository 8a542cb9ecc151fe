"""LoRA on the Linear layers of the DiT blocks, in the format FramePack's community tools load.

:func:`apply_lora` swaps each targeted ``nn.Linear`` of the repeated blocks (``PackedDiT.block_types``:
dual- and single-stream) for a :class:`LoRALinear`, which keeps the base ``weight``/``bias`` under their
original names (so FramePack checkpoints still load) and adds ``lora_down`` (A, ``(r, in)``) and
``lora_up`` (B, ``(out, r)``, zero-initialised: a fresh LoRA is the identity)::

    y = x W^T + b + (alpha / r) * dropout(x A^T) B^T

:func:`merge_lora` folds ``(alpha / r) B A`` into ``W`` and restores plain ``nn.Linear`` layers.

File format (:func:`save_lora` / :func:`load_lora`): musubi-tuner's FramePack LoRA format, i.e. kohya's
keys (musubi-tuner ``src/musubi_tuner/networks/lora.py`` and ``lora_framepack.py``: prefix ``lora_unet``,
target blocks ``HunyuanVideoTransformerBlock`` / ``HunyuanVideoSingleTransformerBlock``, modules whose
path contains ``norm`` excluded, ``scale = alpha / rank``). Our block paths equal FramePack's, so a module
``transformer_blocks.0.attn.to_q`` is stored as::

    lora_unet_transformer_blocks_0_attn_to_q.lora_down.weight   (r, in)
    lora_unet_transformer_blocks_0_attn_to_q.lora_up.weight     (out, r)
    lora_unet_transformer_blocks_0_attn_to_q.alpha              ()

That is the file musubi-tuner writes for FramePack, and what FramePack-eichi merges natively
(``lora2_utils/lora_utils.py``, ``merge_lora_to_state_dict``: for each model weight key ``K.weight`` it
looks up ``"lora_unet_" + K.replace(".", "_")`` + ``.lora_down.weight`` / ``.lora_up.weight`` / ``.alpha``
and adds ``alpha / rank * up @ down``). :func:`load_lora` also reads the diffusers/PEFT layout of
diffusion-pipe and similar trainers (``transformer.<path>.lora_A.weight`` / ``lora_B``, or the
``diffusion_model.`` prefix; no alpha, so alpha = rank), as FramePack-eichi does.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from lvg.io import atomic_path

KOHYA_PREFIX = "lora_unet"
"""Key prefix of musubi-tuner / kohya DiT LoRAs."""


@dataclass(frozen=True)
class LoRAConfig:
    """Low-rank adapters on the Linear layers of the DiT's dual- and single-stream blocks."""

    rank: int = 32
    """Rank r of each adapter (musubi-tuner's ``network_dim``)."""
    alpha: float = 32.0
    """Scale numerator: the update is ``alpha / rank * B A`` (musubi-tuner's ``network_alpha``)."""
    dropout: float = 0.0
    """Dropout on the rank-r activations ``x A^T`` while training."""
    targets: tuple[str, ...] = (r".*",)
    """Regexes (``re.fullmatch``) on Linear paths inside the DiT, e.g. ``.*attn\\.to_[qkv]``; any match selects."""
    exclude: tuple[str, ...] = (r".*norm.*",)
    """Regexes that deselect; the default skips the adaLN modulation (``norm1.linear``...) as musubi-tuner does."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "targets", tuple(self.targets))
        object.__setattr__(self, "exclude", tuple(self.exclude))
        if self.rank < 1:
            raise ValueError(f"LoRAConfig.rank must be >= 1, got {self.rank}.")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"LoRAConfig.dropout must be in [0, 1), got {self.dropout}.")
        for pattern in (*self.targets, *self.exclude):
            try:
                re.compile(pattern)
            except re.error as err:
                raise ValueError(f"LoRAConfig: invalid regex {pattern!r}: {err}.") from err


class LoRALinear(nn.Linear):
    """A Linear layer plus a low-rank update; ``weight`` and ``bias`` are the base layer's own tensors."""

    def __init__(self, base: nn.Linear, rank: int, alpha: float, dropout: float = 0.0):
        # nn.Module's init only: the base layer's parameters are adopted, not re-allocated (meta-safe).
        nn.Module.__init__(self)
        self.in_features, self.out_features = base.in_features, base.out_features
        self.weight, self.bias = base.weight, base.bias
        self.rank, self.alpha, self.scale = rank, float(alpha), alpha / rank
        factory = {"device": base.weight.device, "dtype": base.weight.dtype}
        self.lora_down = nn.Linear(self.in_features, rank, bias=False, **factory)  # A (r, in)
        self.lora_up = nn.Linear(rank, self.out_features, bias=False, **factory)  # B (out, r)
        self.lora_dropout = nn.Dropout(dropout)
        self.reset_lora()

    def reset_lora(self) -> None:
        """A: kaiming-uniform as nn.Linear; B: zero, so the adapter starts as the identity."""
        nn.init.kaiming_uniform_(self.lora_down.weight, a=math.sqrt(5))
        nn.init.zeros_(self.lora_up.weight)

    def delta_weight(self) -> Tensor:
        """``(alpha / r) B A`` ``(out, in)``: what merging adds to ``weight``."""
        return self.scale * (self.lora_up.weight @ self.lora_down.weight)

    def forward(self, x: Tensor) -> Tensor:
        return F.linear(x, self.weight, self.bias) + self.scale * self.lora_up(self.lora_dropout(self.lora_down(x)))

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, rank={self.rank}, alpha={self.alpha}"


def _block_linears(model: nn.Module) -> Iterable[tuple[str, nn.Linear]]:
    """``(path, layer)`` of every Linear inside the model's repeated blocks (``block_types``)."""
    block_types = getattr(type(model), "block_types", None)
    if not block_types:
        raise ValueError(f"{type(model).__name__} declares no block_types (LoRA targets the Linears of its blocks).")
    for block_name, block in model.named_modules():
        if isinstance(block, block_types):
            for name, module in block.named_modules():
                if isinstance(module, nn.Linear) and not isinstance(module, LoRALinear) and name:
                    yield f"{block_name}.{name}", module


def _set_module(model: nn.Module, path: str, module: nn.Module) -> None:
    parent, _, child = path.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, child, module)


def lora_layers(model: nn.Module) -> dict[str, LoRALinear]:
    """The LoRA layers of ``model`` by path."""
    return {name: m for name, m in model.named_modules() if isinstance(m, LoRALinear)}


def apply_lora(model: nn.Module, config: LoRAConfig) -> list[str]:
    """Wrap the targeted block Linears of ``model`` (a :class:`~lvg.models.dit.PackedDiT`) in LoRA layers.

    Args:
        model: a model with ``block_types`` (the repeated blocks LoRA may touch).
        config: rank, alpha, dropout and path patterns.

    Returns:
        the paths of the wrapped layers (in module order).
    """
    chosen = [
        (path, layer) for path, layer in _block_linears(model)
        if any(re.fullmatch(p, path) for p in config.targets) and not any(re.fullmatch(p, path) for p in config.exclude)
    ]
    if not chosen:
        raise ValueError(
            f"lora: targets {list(config.targets)} minus exclude {list(config.exclude)} match no Linear layer of the "
            "DiT blocks; paths look like 'transformer_blocks.0.attn.to_q' or 'single_transformer_blocks.3.proj_mlp'."
        )
    for path, layer in chosen:
        _set_module(model, path, LoRALinear(layer, config.rank, config.alpha, config.dropout))
    return [path for path, _ in chosen]


@torch.no_grad()
def merge_lora(model: nn.Module) -> int:
    """Fold every LoRA update into its base weight and put plain ``nn.Linear`` layers back.

    Returns:
        the number of merged layers. The merged model computes what the LoRA model computed (in the
        weights' dtype) without the adapters' extra matmuls.
    """
    layers = lora_layers(model)
    for path, layer in layers.items():
        merged = nn.Linear(layer.in_features, layer.out_features, bias=layer.bias is not None, device="meta")
        merged.weight = nn.Parameter(layer.weight + layer.delta_weight().to(layer.weight.dtype),
                                     requires_grad=layer.weight.requires_grad)
        merged.bias = layer.bias
        _set_module(model, path, merged)
    return len(layers)


def kohya_name(path: str) -> str:
    """``transformer_blocks.0.attn.to_q`` -> ``lora_unet_transformer_blocks_0_attn_to_q``."""
    return f"{KOHYA_PREFIX}_{path.replace('.', '_')}"


def lora_state_dict(model: nn.Module) -> dict[str, Tensor]:
    """The adapters of ``model`` under musubi-tuner's FramePack keys (see the module docstring)."""
    layers = lora_layers(model)
    if not layers:
        raise ValueError("the model has no LoRA layers to export (was it trained with `lora:` set?).")
    state = {}
    for path, layer in layers.items():
        key = kohya_name(path)
        state[f"{key}.lora_down.weight"] = layer.lora_down.weight.detach().cpu().contiguous()
        state[f"{key}.lora_up.weight"] = layer.lora_up.weight.detach().cpu().contiguous()
        state[f"{key}.alpha"] = torch.tensor(layer.alpha)
    return state


def save_lora(model: nn.Module, path: str | Path, dtype: torch.dtype | None = None) -> Path:
    """Write the adapters of ``model`` as a musubi-tuner/kohya FramePack LoRA ``.safetensors`` (atomically).

    Args:
        model: the DiT holding LoRA layers (``stage_module.dit``).
        path: output file.
        dtype: cast the A/B matrices (e.g. ``torch.bfloat16`` halves the file); alpha stays fp32.
    """
    state = lora_state_dict(model)
    if dtype is not None:
        state = {k: v if k.endswith(".alpha") else v.to(dtype) for k, v in state.items()}
    return write_lora(state, path)


def write_lora(state: dict[str, Tensor], path: str | Path) -> Path:
    """Write kohya-named LoRA tensors (``<name>.lora_down/up.weight``, ``<name>.alpha``) with musubi-tuner's
    metadata."""
    ranks = {v.shape[0] for k, v in state.items() if k.endswith(".lora_down.weight")}
    alphas = {float(v) for k, v in state.items() if k.endswith(".alpha")}
    metadata = {"ss_network_module": "networks.lora_framepack", "ss_network_dim": str(max(ranks)),
                "ss_network_alpha": str(max(alphas))}
    with atomic_path(path, suffix=".safetensors") as tmp:
        save_file(state, str(tmp), metadata=metadata)
    return Path(path)


def _from_peft(state: dict[str, Tensor]) -> dict[str, Tensor]:
    """diffusers/PEFT keys (``transformer.<path>.lora_A.weight``) -> kohya keys; others pass through."""
    peft = [k for k in state if k.split(".", 1)[0] in ("transformer", "diffusion_model") and ".lora_" in k]
    if not peft:
        return state
    out = {k: v for k, v in state.items() if k not in peft}
    for key in peft:
        path, _, field = key.split(".", 1)[1].rpartition(".lora_")
        field = {"A.weight": "lora_down.weight", "B.weight": "lora_up.weight"}.get(field, field)
        out[f"{kohya_name(path)}.{field}"] = state[key]
    return out


@torch.no_grad()
def load_lora(model: nn.Module, path: str | Path, dropout: float = 0.0) -> list[str]:
    """Load a musubi-tuner/kohya FramePack LoRA (or a diffusers/PEFT one) into ``model`` (strict).

    Layers that are not LoRA layers yet are wrapped with the file's rank and alpha; existing LoRA
    layers must have the file's rank. Every module in the file must exist among the block Linears.

    Args:
        model: a :class:`~lvg.models.dit.PackedDiT` (plain or already holding LoRA layers).
        path: the ``.safetensors`` file.
        dropout: adapter dropout for layers created here.

    Returns:
        the paths of the loaded layers.
    """
    file = Path(path)
    if not file.is_file():
        raise ValueError(f"LoRA file {file} does not exist.")
    state = _from_peft(load_file(str(file)))
    by_name = {kohya_name(p): (p, m) for p, m in [*_block_linears(model), *lora_layers(model).items()]}
    modules: dict[str, dict[str, Tensor]] = {}
    for key, tensor in state.items():
        name, _, field = key.partition(".")
        if field not in ("lora_down.weight", "lora_up.weight", "alpha"):
            raise ValueError(f"{file}: unexpected key {key!r}; expected '<name>.lora_down.weight', "
                             "'<name>.lora_up.weight' and '<name>.alpha' (musubi-tuner/kohya FramePack LoRA).")
        modules.setdefault(name, {})[field] = tensor
    unknown = sorted(set(modules) - set(by_name))
    if unknown:
        raise ValueError(f"{file}: {len(unknown)} LoRA modules match no Linear of the DiT blocks, e.g. {unknown[:3]}. "
                         "Is it a FramePack(-F1) LoRA for this model config?")
    loaded = []
    for name, tensors in modules.items():
        if "lora_down.weight" not in tensors or "lora_up.weight" not in tensors:
            raise ValueError(f"{file}: {name} needs both lora_down.weight and lora_up.weight.")
        down, up = tensors["lora_down.weight"], tensors["lora_up.weight"]
        rank = down.shape[0]
        alpha = float(tensors["alpha"]) if "alpha" in tensors else float(rank)  # kohya: no alpha = no scaling
        path_, layer = by_name[name]
        if not isinstance(layer, LoRALinear):
            layer = LoRALinear(layer, rank, alpha, dropout)
            _set_module(model, path_, layer)
        if layer.lora_down.weight.shape != down.shape or layer.lora_up.weight.shape != up.shape:
            raise ValueError(f"{file}: {name} has A {tuple(down.shape)} / B {tuple(up.shape)}, the model's layer "
                             f"expects {tuple(layer.lora_down.weight.shape)} / {tuple(layer.lora_up.weight.shape)}.")
        layer.alpha, layer.scale = alpha, alpha / rank
        layer.lora_down.weight.copy_(down)
        layer.lora_up.weight.copy_(up)
        loaded.append(path_)
    return loaded
