"""Latent shards: what training reads. One safetensors file per video (clip) plus ``index.json``.

Shard ``<id>.safetensors`` (tensors of one clip, no batch dimension):

==============  =======================  ==============================================
``latents``     ``(C, F, h, w)``         codec latents of every frame; frame 0 = start
``text``        ``(L, D_text)``          per-token text features of the caption
``text_mask``   ``(L,)`` uint8           1 for real tokens (a prefix)
``pooled``      ``(D_pool,)``            pooled text feature
``image``       ``(L_i, D_img)``         image features of frame 0 (optional)
==============  =======================  ==============================================

and JSON metadata under the key ``lvg``: ``id``, ``caption``, ``fps``, ``latent_frames``, ``source``
(the manifest's video), ``source_id``, ``start_frame`` / ``end_frame`` (the clip's frames in the
source file), ``motion`` (its motion score) and ``structured_caption`` when the manifest has one.

``index.json``: ``format``, the ``encoders`` that wrote the shards, the ``prepare`` settings,
``videos`` (``id``, ``file``, ``latent_frames``, ``caption``, ``source_id``) and ``skipped`` (``id``,
``reason``). Sections are cut at load time (``(F - 1) // window`` of them), so one set of shards
serves every window size. :mod:`lvg.data.prepare` writes them: shards atomically, the index from
finished videos only, so a half-written shard never counts.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from lvg.io import atomic_path

FORMAT = 2
"""Shard format. 2: latents are normalised by the codec's ``scaling_factor`` / ``shift_factor`` (recorded
with the encoders in the index); format-1 shards hold raw toy latents and are refused."""
INDEX = "index.json"


def write_shard(path: Path, tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
    with atomic_path(path) as tmp:
        save_file({k: v.contiguous() for k, v in tensors.items()}, str(tmp), metadata={"lvg": json.dumps(meta)})


def read_shard(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Tensors and metadata of one shard; a damaged file raises ValueError naming it."""
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = json.loads((f.metadata() or {}).get("lvg", "{}"))
            tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 -- safe_open is not a mapping
    except Exception as err:  # safetensors raises several types for truncated/corrupt files
        raise ValueError(f"Shard {path} is unreadable ({err}); delete it and prepare again.") from err
    missing = {"latents", "text", "text_mask", "pooled"} - tensors.keys()
    if missing:
        raise ValueError(f"Shard {path} lacks tensors {sorted(missing)}; it was not written by lvg {FORMAT=}.")
    return tensors, meta


def read_index(shard_dir: str | Path) -> dict[str, Any]:
    path = Path(shard_dir) / INDEX
    if not path.is_file():
        raise ValueError(f"No {INDEX} in {shard_dir}: prepare the shards first (`lvg prepare --config TRAIN.yaml "
                         "--manifest MANIFEST.jsonl`; ToyWorldDataModule prepares its own).")
    index = json.loads(path.read_text())
    if index.get("format") != FORMAT:
        older = isinstance(index.get("format"), int) and index["format"] < FORMAT
        why = " (written before latents were normalised by the codec's scaling/shift factors)" if older else ""
        raise ValueError(f"{path}: shard format {index.get('format')} is not {FORMAT}{why}; prepare the shards again: "
                         f"delete {Path(shard_dir)} and rerun `lvg prepare` (the toy world's datamodule prepares "
                         "its own on the next `lvg fit`).")
    return index


def describe(obj: Any) -> str:
    """A short identity of an encoder, stored in the index to catch mixed encoders."""
    fields = {
        k: v for k, v in vars(obj).items()
        if isinstance(v, (int, float, str)) and not k.startswith("_") and k != "training"
    }
    return f"{type(obj).__name__}({', '.join(f'{k}={v}' for k, v in sorted(fields.items()))})"
