"""Model families, one per file: the packed DiT backbone (``dit``, ``rope``, ``packing``), MemoryPack's
``memory_pack`` and ``semantic_pack``, the encoders (``encoders``: toy; ``hunyuan``: HunyuanVideo VAE, LLaMA +
CLIP-L, SigLIP), checkpoint reading (``weights``) and LoRA (``lora``)."""

from lvg.models.dit import PackedDiT

__all__ = ["PackedDiT"]
