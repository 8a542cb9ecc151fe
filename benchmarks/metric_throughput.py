"""Frames per second of each VBench metric at 256x256 (CPU by default, random weights, real architectures).

Subject consistency (DINO ViT-B/16), background consistency (CLIP ViT-B/32), aesthetic quality (CLIP ViT-L/14 +
linear head), imaging quality (MUSIQ; a labelled stub when pyiqa is missing), dynamic degree (RAFT large, 20
updates) and motion smoothness (AMT-S is never shipped: a labelled stub interpolator, so its number is the
metric's own overhead only). Weights are random: the numbers time the networks, the scores are meaningless.

    python benchmarks/metric_throughput.py [--device cuda] [--frames 8] [--size 256]

Prints one JSON object ``{"device", "size", "frames", "metrics": {name: {"frames_per_s", "seconds", "note"}}}``.
"""

from __future__ import annotations

import argparse
import importlib
import json
import time
import warnings
from collections.abc import Callable

import torch

from lvg.metrics.motion import DynamicDegree, MotionSmoothness


def _part_a(module: str, cls: str, **kwargs) -> Callable[[], object]:
    """Factory for a metric class of ``lvg.metrics.<module>`` with random weights."""
    def build():
        return getattr(importlib.import_module(f"lvg.metrics.{module}"), cls)(**kwargs)
    return build


def _imaging_quality() -> tuple[object, str]:
    try:
        import pyiqa  # noqa: F401
    except ImportError:
        return _part_a("quality", "ImagingQuality", weights=lambda x: x.mean(dim=(1, 2, 3)) * 100)(), \
            "stub scorer (pyiqa not installed): measures the metric's resize/normalise overhead only"
    return _part_a("quality", "ImagingQuality", weights=None)(), "MUSIQ architecture, random weights"


METRICS: dict[str, Callable[[], tuple[object, str]]] = {
    "subject_consistency": lambda: (_part_a("consistency", "SubjectConsistency", weights=None)(),
                                    "DINO ViT-B/16, random weights"),
    "background_consistency": lambda: (_part_a("consistency", "BackgroundConsistency", weights=None)(),
                                       "CLIP ViT-B/32 quickgelu, random weights"),
    "aesthetic_quality": lambda: (_part_a("quality", "AestheticQuality", weights=None, head_weights=None)(),
                                  "CLIP ViT-L/14 quickgelu + Linear(768, 1), random weights"),
    "imaging_quality": _imaging_quality,
    "dynamic_degree": lambda: (DynamicDegree(weights=None), "RAFT large, 20 flow updates, random weights"),
    "motion_smoothness": lambda: (MotionSmoothness(lambda f0, f1, t: torch.lerp(f0, f1, t)),
                                  "stub interpolator (AMT-S is CC BY-NC, not shipped): metric overhead only"),
}


def measure(metric, video: torch.Tensor) -> float:
    """Seconds for one ``update`` on a (1, T, 3, H, W) uint8 batch, after a 3-frame warm-up."""
    metric.update(video[:, :3])
    metric.reset()
    if video.is_cuda:
        torch.cuda.synchronize()
    start = time.perf_counter()
    metric.update(video)
    if video.is_cuda:
        torch.cuda.synchronize()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--frames", type=int, default=8)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch default)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    torch.manual_seed(0)
    video = torch.randint(0, 256, (1, args.frames, 3, args.size, args.size), dtype=torch.uint8, device=device)
    results = {}
    for name, build in METRICS.items():
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # random-weight warnings are expected here
                metric, note = build()
        except (ImportError, AttributeError, TypeError) as e:
            results[name] = {"skipped": f"{type(e).__name__}: {e}"}
            continue
        seconds = measure(metric.to(device), video)
        results[name] = {"frames_per_s": round(args.frames / seconds, 3), "seconds": round(seconds, 3), "note": note}
    print(json.dumps({"device": str(device), "threads": torch.get_num_threads(), "size": args.size,
                      "frames": args.frames, "metrics": results}, indent=2))


if __name__ == "__main__":
    main()
