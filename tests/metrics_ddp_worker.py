"""Run by tests/test_metrics_vbench.py: 2 CPU processes (gloo) update one VBench metric with uneven shards.

Usage: ``python metrics_ddp_worker.py RANK WORLD_SIZE PORT OUT``; rank 0 writes the synced ``compute()`` to OUT.
Also defines the stub feature net and videos the test shares.
"""

from __future__ import annotations

import math
import sys

import torch
import torch.distributed as dist
from torch import Tensor, nn

from lvg.metrics.consistency import CLIP_MEAN, CLIP_STD


class AngleStub(nn.Module):
    """Stub CLIP image tower: a frame of constant grey ``g`` maps to the 2-D unit vector at angle ``g`` degrees.

    It undoes the CLIP normalisation of channel 0 to read ``g`` back from the (N, 3, 224, 224) input.
    """

    def forward(self, images: Tensor) -> Tensor:
        grey = (images[:, 0].mean((-2, -1)) * CLIP_STD[0] + CLIP_MEAN[0]) * 255.0  # (N,)
        angle = torch.deg2rad(grey.double().round())
        return torch.stack([angle.cos(), angle.sin()], dim=-1)  # (N, 2)


def angle_video(degrees: list[float], size: tuple[int, int] = (24, 40)) -> Tensor:
    """(T, 3, H, W) uint8 video whose frame i is the constant grey ``degrees[i]``."""
    return torch.tensor(degrees, dtype=torch.uint8).view(-1, 1, 1, 1).expand(-1, 3, *size).contiguous()


def shards() -> list[list[Tensor]]:
    """Uneven shards of unequal-length videos: rank 0 gets two videos, rank 1 one."""
    return [[angle_video([0, 60, 120]), angle_video([10, 20, 30, 40, 50])],
            [angle_video([0, 90, 100, 0, 45, 45, 170])]]


if __name__ == "__main__":
    from lvg.metrics.consistency import BackgroundConsistency

    rank, world, port, out = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4]
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    results = []
    for reduction in ("pairs", "videos"):
        metric = BackgroundConsistency(weights=AngleStub(), reduction=reduction)
        metric.update(shards()[rank])
        results.append(float(metric.compute()))
    if rank == 0:
        torch.save(results, out)
    dist.barrier()
    dist.destroy_process_group()
    assert not any(math.isnan(r) for r in results)
