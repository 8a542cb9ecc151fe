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
import warnings
from collections.abc import Iterable, Mapping
from pathlib import Path

import torch
from safetensors import safe_open

from lvg.config import DiTConfig
from lvg.models.dit import PackedDiT

CONFIG_NAME = "config.json"
_HINT = (
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
    raise ValueError(f"Checkpoint {str(source)!r} does not exist (expected a directory, a .safetensors file or a hub id).")


def _summary(keys: Iterable[str], limit: int = 8) -> str:
    keys = sorted(keys)
    head = ", ".join(keys[:limit])
    return f"{len(keys)} ({head}{', ...' if len(keys) > limit else ''})"


def load_state_dict(files: list[Path], dtype: torch.dtype | None = None) -> dict[str, torch.Tensor]:
    """Read safetensors files into one state dict, optionally casting floating tensors."""
    state: dict[str, torch.Tensor] = {}
    for file in files:
        with safe_open(str(file), framework="pt") as f:
            for key in f.keys():
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
        problems.append(f"missing keys {_summary(missing)}")
    if strict and unexpected:
        problems.append(f"unexpected keys {_summary(unexpected)}")
    if problems:
        raise ValueError(f"{source} does not fit {target}: " + " | ".join(problems) + (f". {hint}" if hint else "."))


def load_dit(
    source: str | Path,
    *,
    config: DiTConfig | str | None = None,
    subfolder: str | None = None,
    strict: bool = True,
    dtype: torch.dtype | None = None,
    device: torch.device | str = "cpu",
) -> PackedDiT:
    """Build a :class:`PackedDiT` and load a checkpoint into it.

    Args:
        source: checkpoint directory, single ``.safetensors`` file, or hub id.
        config: a :class:`DiTConfig` or preset name; default: the checkpoint's ``config.json``.
        subfolder: folder inside ``source`` holding the transformer (e.g. ``transformer``).
        strict: every parameter must be in the checkpoint and nothing else may be.
        dtype: cast floating tensors (e.g. ``torch.bfloat16``); default keeps the checkpoint's.
        device: where the loaded model lives.
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
    state = load_state_dict(files, dtype)
    if strict:
        with torch.device("meta"):
            model = PackedDiT(config)
        check_state_dict(model.state_dict(), state, str(path), f"PackedDiT({config})", hint=_HINT)
        model.load_state_dict(state, strict=True, assign=True)
    else:
        model = PackedDiT(config)
        check_state_dict(model.state_dict(), state, str(path), f"PackedDiT({config})", strict=False, hint=_HINT)
        result = model.load_state_dict(state, strict=False)
        if result.missing_keys or result.unexpected_keys:
            warnings.warn(
                f"{path}: non-strict load; kept initial values for missing keys {_summary(result.missing_keys)}, "
                f"ignored unexpected keys {_summary(result.unexpected_keys)}.",
                stacklevel=2,
            )
        if dtype is not None:
            model.to(dtype)
    return model.to(device)
