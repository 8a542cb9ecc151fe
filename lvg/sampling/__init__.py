"""Samplers over the flow convention (and, later, the long-video pipeline)."""

from lvg.sampling.samplers import euler_sample

__all__ = ["euler_sample"]
