"""Model families: the packed DiT backbone and (later) MemoryPack, encoders."""

from lvg.models.dit import PackedDiT

__all__ = ["PackedDiT"]
