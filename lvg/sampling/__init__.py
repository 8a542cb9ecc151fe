"""Generation over the flow convention: samplers (``samplers``), the section-by-section long-video pipeline
(``pipeline``), block offload (``offload``) and TeaCache (``teacache``)."""

from lvg.sampling.samplers import euler_sample

__all__ = ["euler_sample"]
