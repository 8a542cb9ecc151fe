"""Latent shards as litdata chunks (one item per whole video) for
:class:`~lvg.data.streaming.StreamingLatentDataModule`.

litdata is optional (``pip install "lvg[stream]"``); only these functions import it.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from lvg.data.shards import read_index, read_shard

log = logging.getLogger(__name__)


def require_litdata():
    """The litdata module, or an ImportError that says how to install it."""
    # older litdata versions ask PyPI for a newer release on first use; training must not touch the network
    os.environ.setdefault("LITDATA_DISABLE_VERSION_CHECK", "1")
    try:
        import litdata
    except ImportError as err:
        raise ImportError('Streaming from litdata chunks needs litdata: pip install "lvg[stream]"') from err
    return litdata


def litdata_item(file: str) -> dict[str, Any]:
    """One shard as one litdata item: the tensors of :class:`~lvg.data.datamodule.VideoShardDataset` plus its
    metadata."""
    tensors, meta = read_shard(file)
    tensors["text_mask"] = tensors["text_mask"].bool()
    return {"id": meta["id"], "caption": meta.get("caption", ""), "fps": float(meta.get("fps", 0.0)),
            "latent_frames": int(tensors["latents"].shape[1]), **tensors}


def write_litdata(
    shard_dir: str | Path,
    out_dir: str,
    *,
    chunk_bytes: int | str = "64MB",
    min_latent_frames: int = 1,
    num_workers: int = 1,
    compression: str | None = None,
    overwrite: bool = False,
    start_method: str | None = None,
) -> str:
    """Convert prepared latent shards (see :mod:`lvg.data.shards`) into litdata chunks, one item per video.

    Args:
        shard_dir: directory with ``index.json`` and the ``<id>.safetensors`` shards.
        out_dir: local directory or object-store URL (``s3://bucket/prefix``) the chunks are written to.
        chunk_bytes: target chunk size (a video larger than it gets a chunk of its own). Chunks are
            what is downloaded and cached while streaming, so tens of MB suit object storage.
        min_latent_frames: shorter videos are left out (and reported); at least ``1 + window`` for training.
        num_workers: processes converting shards in parallel.
        compression: litdata chunk compression (``"zstd"``) or None.
        overwrite: replace an existing litdata dataset at ``out_dir`` (otherwise litdata refuses).
        start_method: how litdata starts its worker processes (None: its default, ``spawn``; ``fork``
            starts in milliseconds instead of seconds, fine when this process has no CUDA context).

    Returns:
        ``out_dir``, to pass to :class:`~lvg.data.streaming.StreamingLatentDataModule` as ``input_dir`` (a string, since
        it may be a URL).
    """
    litdata = require_litdata()
    if not overwrite and "://" not in str(out_dir) and Path(out_dir, "index.json").is_file():
        raise ValueError(f"{out_dir} already holds a litdata dataset; pass overwrite=True to replace it, "
                         "or write to another directory.")
    index = read_index(shard_dir)
    videos = sorted(index["videos"], key=lambda v: v["id"])
    short = [v["id"] for v in videos if v["latent_frames"] < min_latent_frames]
    if short:
        log.warning("%d videos shorter than %d latent frames are left out: %s", len(short), min_latent_frames, short)
    files = [str(Path(shard_dir, v["file"]).resolve()) for v in videos if v["latent_frames"] >= min_latent_frames]
    if not files:
        raise ValueError(f"{shard_dir}: no video has >= {min_latent_frames} latent frames; nothing to write.")
    litdata.optimize(
        fn=litdata_item, inputs=files, output_dir=str(out_dir), chunk_bytes=chunk_bytes, num_workers=num_workers,
        compression=compression, reorder_files=False, mode="overwrite" if overwrite else None,
        start_method=start_method, verbose=False,
    )
    return str(out_dir)
