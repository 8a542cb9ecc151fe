"""Latent shards: what training reads. One safetensors file per video plus ``index.json``.

Shard ``<id>.safetensors`` (tensors of one video, no batch dimension):

==============  =======================  ==============================================
``latents``     ``(C, F, h, w)``         codec latents of every frame; frame 0 = start
``text``        ``(L, D_text)``          per-token text features of the caption
``text_mask``   ``(L,)`` uint8           1 for real tokens (a prefix)
``pooled``      ``(D_pool,)``            pooled text feature
``image``       ``(L_i, D_img)``         image features of frame 0 (optional)
==============  =======================  ==============================================

and JSON metadata under the key ``lvg``: ``id``, ``caption``, ``fps``, ``latent_frames``, ``source``.

``index.json``: ``format``, the encoders that wrote the shards, ``videos`` (``id``, ``file``,
``latent_frames``, ``caption``) and ``skipped`` (``id``, ``reason``). Sections are cut at load time
(``(F - 1) // window`` of them), so one set of shards serves every window size. Shards are written
atomically and the index last, so an interrupted preparation resumes without redoing finished
videos and never leaves a half-written shard that counts.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from lvg.data.manifest import read_manifest
from lvg.io import atomic_path, atomic_write_text
from lvg.models.encoders import ImageEncoder, TextEncoder, VideoCodec

FORMAT = 1
INDEX = "index.json"
log = logging.getLogger(__name__)


def write_shard(path: Path, tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
    with atomic_path(path) as tmp:
        save_file({k: v.contiguous() for k, v in tensors.items()}, str(tmp), metadata={"lvg": json.dumps(meta)})


def read_shard(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Tensors and metadata of one shard; a damaged file raises ValueError naming it."""
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = json.loads((f.metadata() or {}).get("lvg", "{}"))
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as err:  # safetensors raises several types for truncated/corrupt files
        raise ValueError(f"Shard {path} is unreadable ({err}); delete it and prepare again.") from err
    missing = {"latents", "text", "text_mask", "pooled"} - tensors.keys()
    if missing:
        raise ValueError(f"Shard {path} lacks tensors {sorted(missing)}; it was not written by lvg {FORMAT=}.")
    return tensors, meta


def read_index(shard_dir: str | Path) -> dict[str, Any]:
    path = Path(shard_dir) / INDEX
    if not path.is_file():
        raise ValueError(f"No {INDEX} in {shard_dir}: prepare the shards first (e.g. ToyWorldDataModule does it).")
    index = json.loads(path.read_text())
    if index.get("format") != FORMAT:
        raise ValueError(f"{path}: shard format {index.get('format')} is not {FORMAT}; prepare the shards again.")
    return index


def describe(obj: Any) -> str:
    """A short identity of an encoder, stored in the index to catch mixed encoders."""
    fields = {
        k: v for k, v in vars(obj).items()
        if isinstance(v, (int, float, str)) and not k.startswith("_") and k != "training"
    }
    return f"{type(obj).__name__}({', '.join(f'{k}={v}' for k, v in sorted(fields.items()))})"


def prepare_shards(
    manifest: str | Path,
    out_dir: str | Path,
    codec: VideoCodec,
    text_encoder: TextEncoder,
    image_encoder: ImageEncoder | None,
    *,
    min_latent_frames: int = 2,
    dtype: torch.dtype = torch.float32,
) -> dict[str, Any]:
    """Encode every manifest video into a shard; return the index (also written to ``index.json``).

    Videos that cannot be read or are shorter than ``min_latent_frames`` latents are skipped and
    reported with their reason; they never stop the run.
    """
    from lvg.data.video_io import read_video

    rows = read_manifest(manifest)  # validates every row before any work starts
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    encoders = {
        "codec": describe(codec),
        "text_encoder": describe(text_encoder),
        "image_encoder": None if image_encoder is None else describe(image_encoder),
    }
    if (out / INDEX).is_file():
        old = read_index(out)
        if old.get("encoders") != encoders:
            raise ValueError(
                f"{out} holds shards written with {old.get('encoders')}, not {encoders}; use another directory."
            )
    videos, skipped = [], []
    for row in rows:
        file = out / f"{row['id']}.safetensors"
        try:
            if file.is_file():
                tensors, meta = read_shard(file)  # finished earlier: keep it
            else:
                frames, fps = read_video(row["video_path"])
                video = torch.from_numpy(frames).permute(0, 3, 1, 2).unsqueeze(0)  # (1, T, 3, H, W)
                latents = codec.encode(video)[0].to(dtype)
                if latents.shape[1] < min_latent_frames:
                    raise ValueError(f"too short: {latents.shape[1]} latent frames < {min_latent_frames}")
                text = text_encoder.encode([row["caption"]])
                tensors = {
                    "latents": latents,
                    "text": text.tokens[0][text.mask[0]].to(dtype),
                    "text_mask": torch.ones(int(text.mask[0].sum()), dtype=torch.uint8),
                    "pooled": text.pooled[0].to(dtype),
                }
                if image_encoder is not None:
                    tensors["image"] = image_encoder.encode(video[:, 0])[0].to(dtype)
                meta = {"id": row["id"], "caption": row["caption"], "fps": fps, "source": row["video"],
                        "latent_frames": latents.shape[1]}
                write_shard(file, tensors, meta)
        except ValueError as err:
            log.warning("skipping video %s: %s", row["id"], err)
            skipped.append({"id": row["id"], "reason": str(err)})
            continue
        videos.append({"id": row["id"], "file": file.name, "latent_frames": int(tensors["latents"].shape[1]),
                       "caption": row["caption"]})
    if not videos:
        raise ValueError(f"No usable video in {manifest}; reasons: {skipped}")
    index = {"format": FORMAT, "encoders": encoders, "videos": videos, "skipped": skipped}
    atomic_write_text(out / INDEX, json.dumps(index, indent=1))
    return index
