"""The tiny toy setup the tests share: a 3-video toy world, the debug DiT sized for the toy encoders, a small
SemanticPack, seeded random DiTs, the one-process replay of a multi-process run. Plain helpers (the fixtures are in
``conftest.py``), importable by the DDP/FSDP worker scripts, which run outside pytest."""

import contextlib
from pathlib import Path
from typing import Any

import lightning as L
import torch

from lvg.config import DiTConfig
from lvg.data.datamodule import ToyWorldDataModule, VideoShardDataset, collate_videos
from lvg.data.shards import read_index
from lvg.data.toy_world import ToyWorldConfig
from lvg.models.dit import PackedDiT
from lvg.models.encoders import Encoders, PixelCodec, ToyImageEncoder, ToyTextEncoder
from lvg.models.memory_pack import MemoryPackConfig
from lvg.models.semantic_pack import SemanticPack, SemanticPackConfig
from lvg.sampling.pipeline import LongVideoPipeline, SamplingConfig
from lvg.training import TeacherForcingModule

CONFIGS = Path(__file__).parents[1] / "configs"
WINDOW = 3
FPS = 8
TINY_TOY = ToyWorldConfig(num_videos=3, min_seconds=2.0, max_seconds=3.0, fps=8, size=32, seed=0)
DEBUG_FOR_TOY = {"in_channels": 12, "out_channels": 12, "text_embed_dim": 64, "pooled_projection_dim": 64,
                 "image_proj_dim": 48}
DEBUG_FOR_PIXEL4 = {"in_channels": 48, "out_channels": 48, "text_embed_dim": 64, "pooled_projection_dim": 64,
                    "image_proj_dim": 48}
"""The debug DiT sized for :func:`pixel4_encoders` (PixelCodec(4): 3 * 4 * 4 = 48 latent channels)."""
SMALL_SP = SemanticPackConfig(dim=32, num_heads=4, memory_grid=(2, 2))


def random_dit(seed: int = 0, preset: str = "debug", std: float | None = None, **overrides: Any) -> PackedDiT:
    """A PackedDiT of ``preset`` (fields overridden by keyword) built right after ``torch.manual_seed(seed)``, in
    eval mode. ``std``: then redraw every parameter from N(0, std) -- the adaLN-Zero init makes every block the
    identity and zeroes the output, which would hide most changes; None keeps the init."""
    torch.manual_seed(seed)
    dit = PackedDiT(DiTConfig.from_name(preset, **overrides)).eval()
    if std is not None:
        with torch.no_grad():
            for p in dit.parameters():
                p.normal_(0, std)
    return dit


def pixel4_encoders() -> Encoders:
    """Exact toy encoders at 32 x 32 frames: PixelCodec(4), 64-wide text, the toy image encoder."""
    return Encoders(PixelCodec(4), ToyTextEncoder(64), ToyImageEncoder(), frame_size=(32, 32))


def start_images(b: int = 1, seed: int = 0, size: int = 32) -> torch.Tensor:
    """``b`` random (3, size, size) uint8 start frames, ``(b, 3, size, size)``."""
    return torch.randint(0, 256, (b, 3, size, size), dtype=torch.uint8, generator=torch.Generator().manual_seed(seed))


def start_image(seed: int = 0, size: int = 32) -> torch.Tensor:
    """A random (1, 3, size, size) uint8 start frame."""
    return start_images(1, seed, size)


def make_pipeline(seed: int = 0, sampling: SamplingConfig | None = None, semantic: bool = True) -> LongVideoPipeline:
    """A random debug DiT (std 0.05) + SemanticPack (``SMALL_SP``) with the exact 32 x 32 toy encoders, window
    ``WINDOW``, absolute RoPE; 3 sampler steps unless ``sampling`` says otherwise."""
    dit = random_dit(seed, std=0.05, **DEBUG_FOR_PIXEL4)
    sp = SemanticPack(SMALL_SP, dit.config).eval() if semantic else None
    return LongVideoPipeline(dit, MemoryPackConfig(window=WINDOW, rope_time_mode="absolute"), pixel4_encoders(), sp,
                             sampling or SamplingConfig(steps=3))


def prepare_toy_root(root: Path) -> Path:
    ToyWorldDataModule(root=str(root), toy=TINY_TOY).prepare_data()
    return root


def datamodule(root, **kwargs):
    return ToyWorldDataModule(root=str(root), toy=TINY_TOY, min_latent_frames=1 + WINDOW, **kwargs)


def module(cls=TeacherForcingModule, **kwargs):
    kwargs.setdefault("semantic_pack", SMALL_SP)
    return cls(dit="debug", dit_overrides=DEBUG_FOR_TOY, memory_pack=MemoryPackConfig(window=WINDOW),
               lr=1e-3, **kwargs)


def trainer(tmp_path, **kwargs):
    kwargs.setdefault("callbacks", [])
    return L.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False,
                     default_root_dir=tmp_path, **kwargs)


def replay_ranks_in_one_process(cls, root, ranks: list[dict], steps: int = 2, **kwargs):
    """What DDP computes, in one process: per step, each rank's video (``ranks[r]["videos"][step]``, as its worker
    recorded) through the stage's section loop, gradients averaged over the ranks, clipped at the module's
    ``max_grad_norm``, one optimizer + scheduler step. Returns the module and the pre-clip norm of every step."""
    L.seed_everything(0)
    reference = module(cls, **kwargs)
    index = read_index(root / "shards")
    dataset = VideoShardDataset(root / "shards", sorted(index["videos"], key=lambda v: v["id"]))
    by_id = {v["id"]: i for i, v in enumerate(dataset.videos)}
    optimizers = reference.configure_optimizers()
    optimizer, scheduler = optimizers["optimizer"], optimizers["lr_scheduler"]["scheduler"]
    norms = []
    for step in range(steps):
        for rank in range(len(ranks)):
            batch = collate_videos([dataset[by_id[ranks[rank]["videos"][step]]]])
            reference.video_gradients(batch, reference.step_generator(step, rank),
                                      lambda loss, **kw: loss.backward(**kw), contextlib.nullcontext)
        for p in reference.trainable_parameters():
            p.grad /= len(ranks)
        norms.append(torch.nn.utils.clip_grad_norm_(reference.trainable_parameters(), reference.hparams.max_grad_norm))
        optimizer.step()
        optimizer.zero_grad()
        scheduler.step()
    return reference, norms


@contextlib.contextmanager
def killed_at_denoise_call(n: int):
    """A run killed mid-generation: inside the block ``LongVideoPipeline.denoise_section`` raises
    KeyboardInterrupt at its ``n``-th call (the block must end with it), and works again after."""
    import pytest

    denoise, calls = LongVideoPipeline.denoise_section, [0]

    def dying(self, state, noise):
        calls[0] += 1
        if calls[0] == n:
            raise KeyboardInterrupt
        return denoise(self, state, noise)

    LongVideoPipeline.denoise_section = dying
    try:
        with pytest.raises(KeyboardInterrupt):
            yield
    finally:
        LongVideoPipeline.denoise_section = denoise
