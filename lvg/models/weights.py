"""Loading FramePack(-F1) / diffusers checkpoints into :class:`~lvg.models.dit.PackedDiT`.

Accepted sources:

* a directory in diffusers layout: ``config.json`` + ``*.safetensors`` (sharded with a
  ``*.safetensors.index.json``, or a single file) -- what ``save_pretrained`` and FramePack write;
* a single ``.safetensors`` file (config from a ``config.json`` beside it, or passed explicitly);
* a hub id such as ``lllyasviel/FramePack_F1_I2V_HY_20250503``, downloaded only when asked for
  and only the json/safetensors files (needs internet; tests never do this).

Strict by default: missing, unexpected or mis-shaped tensors raise a ``ValueError`` that lists them.
Strict loads build the model on the meta device and assign the checkpoint tensors, so a 13B model
never exists twice in memory.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from pathlib import Path

import torch
from safetensors import safe_open

from lvg.config import DiTConfig

CONFIG_NAME = "config.json"
WEIGHTS_HINT = (
    "Is it a FramePack(-F1) packed HunyuanVideo transformer with this config? "
    "Pass the matching config (or strict=False to load a partial checkpoint)"
)


def _weight_files(directory: Path) -> list[Path]:
    """Safetensors files of a checkpoint directory, via its index when sharded."""
    indexes = sorted(directory.glob("*.safetensors.index.json"))
    if len(indexes) > 1:
        raise ValueError(f"{directory}: several safetensors index files {[p.name for p in indexes]}; keep one.")
    if indexes:
        try:
            weight_map = json.loads(indexes[0].read_text())["weight_map"]
        except (json.JSONDecodeError, KeyError) as err:
            raise ValueError(f"{indexes[0]}: not a safetensors index (expected a 'weight_map' object): {err}") from err
        files = [directory / name for name in sorted(set(weight_map.values()))]
        missing = [str(f) for f in files if not f.is_file()]
        if missing:
            raise ValueError(f"{indexes[0]} lists shards that do not exist: {missing}")
        return files
    files = sorted(directory.glob("*.safetensors"))
    if len(files) != 1:
        raise ValueError(
            f"{directory}: expected one .safetensors file or a *.safetensors.index.json for shards, "
            f"found {[p.name for p in files] or 'none'}."
        )
    return files


def _read_config(path: Path) -> DiTConfig:
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: invalid JSON ({err}).") from err
    return DiTConfig.from_dict(data, source=str(path))


def _resolve(source: str | Path, subfolder: str | None) -> Path:
    """A local path, or a hub snapshot of the json + safetensors files of ``source``."""
    path = Path(source).expanduser()
    if path.exists():
        return path / subfolder if subfolder else path
    if isinstance(source, str) and source.count("/") == 1 and not source.startswith((".", "/", "~")):
        from huggingface_hub import snapshot_download

        pattern = f"{subfolder}/*" if subfolder else "*"
        snapshot = snapshot_download(source, allow_patterns=[f"{pattern}.json", f"{pattern}.safetensors"])
        return Path(snapshot) / subfolder if subfolder else Path(snapshot)
    raise ValueError(f"Checkpoint {str(source)!r} does not exist "
                     "(expected a directory, a .safetensors file or a hub id).")


def summary(keys: Iterable[str], limit: int = 8) -> str:
    keys = sorted(keys)
    head = ", ".join(keys[:limit])
    return f"{len(keys)} ({head}{', ...' if len(keys) > limit else ''})"


def load_state_dict(files: list[Path], dtype: torch.dtype | None = None) -> dict[str, torch.Tensor]:
    """Read safetensors files into one state dict, optionally casting floating tensors."""
    state: dict[str, torch.Tensor] = {}
    for file in files:
        with safe_open(str(file), framework="pt") as f:
            names = f.keys()  # a safe_open handle has keys() but is not iterable itself
            for key in names:
                tensor = f.get_tensor(key)
                state[key] = tensor.to(dtype) if dtype is not None and tensor.is_floating_point() else tensor
    return state


def check_state_dict(
    expected: Mapping[str, torch.Tensor],
    state: Mapping[str, torch.Tensor],
    source: str,
    target: str,
    strict: bool = True,
    hint: str = "",
) -> None:
    """Raise a ValueError naming every missing / unexpected / mis-shaped tensor of ``state``."""
    missing, unexpected = expected.keys() - state.keys(), state.keys() - expected.keys()
    mismatched = [
        f"{k}: expected {tuple(expected[k].shape)}, checkpoint has {tuple(state[k].shape)}"
        for k in sorted(expected.keys() & state.keys())
        if tuple(state[k].shape) != tuple(expected[k].shape)
    ]
    problems = []
    if mismatched:
        problems.append(f"shape mismatches {len(mismatched)}: " + "; ".join(mismatched[:8]))
    if strict and missing:
        problems.append(f"missing keys {summary(missing)}")
    if strict and unexpected:
        problems.append(f"unexpected keys {summary(unexpected)}")
    if problems:
        raise ValueError(f"{source} does not fit {target}: " + " | ".join(problems) + (f". {hint}" if hint else "."))


def read_dit_checkpoint(
    source: str | Path,
    *,
    config: DiTConfig | str | None = None,
    subfolder: str | None = None,
    dtype: torch.dtype | None = None,
) -> tuple[Path, DiTConfig, dict[str, torch.Tensor]]:
    """The resolved path, config and tensors of a FramePack(-F1) / diffusers transformer checkpoint
    (:meth:`PackedDiT.from_pretrained <lvg.models.dit.PackedDiT.from_pretrained>` builds the model from them).

    Args:
        source: checkpoint directory, single ``.safetensors`` file, or hub id.
        config: a :class:`DiTConfig` or preset name; default: the checkpoint's ``config.json``.
        subfolder: folder inside ``source`` holding the transformer (e.g. ``transformer``).
        dtype: cast floating tensors (e.g. ``torch.bfloat16``); default keeps the checkpoint's.
    """
    path = _resolve(source, subfolder)
    files = [path] if path.is_file() else _weight_files(path)
    if isinstance(config, str):
        config = DiTConfig.from_name(config)
    if config is None:
        config_path = (path.parent if path.is_file() else path) / CONFIG_NAME
        if not config_path.is_file():
            raise ValueError(f"{path}: no {CONFIG_NAME} found; pass config= (a DiTConfig or preset name).")
        config = _read_config(config_path)
    return path, config, load_state_dict(files, dtype)
