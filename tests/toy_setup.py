"""The tiny toy setup the training tests share: a 3-video toy world, the debug DiT sized for the toy encoders,
a small SemanticPack. Plain helpers (the ``toy_root`` fixture is in ``conftest.py``), importable by the DDP/FSDP
worker scripts, which run outside pytest."""

from pathlib import Path

import lightning as L

from lvg.data.datamodule import ToyWorldDataModule
from lvg.data.toy_world import ToyWorldConfig
from lvg.models.memory_pack import MemoryPackConfig
from lvg.models.semantic_pack import SemanticPackConfig
from lvg.training import TeacherForcingModule

CONFIGS = Path(__file__).parents[1] / "configs"
WINDOW = 3
TINY_TOY = ToyWorldConfig(num_videos=3, min_seconds=2.0, max_seconds=3.0, fps=8, size=32, seed=0)
DEBUG_FOR_TOY = {"in_channels": 12, "out_channels": 12, "text_embed_dim": 64, "pooled_projection_dim": 64,
                 "image_proj_dim": 48}
SMALL_SP = SemanticPackConfig(dim=32, num_heads=4, memory_grid=(2, 2))


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
