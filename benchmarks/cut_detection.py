"""Shot-cut detection speed and accuracy against decoding alone and against PySceneDetect.

One synthetic video with known cuts is written to a temporary directory: shots alternate between
toy-world renders (moving sprites, panning camera; three palettes, so some cuts join similar
scenes) and still smooth-noise textures, plus one long pan over a large texture (no cut in it),
all with sensor-like grain (``--grain``) so the bitrate and the decoding cost are realistic.
Then, on that same file, per backend:

* ``decode_fps``: frames/s of just iterating ``reader.iter_chunks(64)`` (full-size RGB) -- the floor;
* ``detect_fps``: frames/s of ``detect_cuts(reader)`` including decoding, and its ratio to
  ``decode_fps`` (target >= 0.8: detection should cost little next to decoding);

and ``scores_fps_on_decoded_frames`` (detection alone on decoded full-size frames), PySceneDetect's ``ContentDetector``
frames/s (default threshold 27, its own PyAV decoding) when ``scenedetect`` is installed, and
precision/recall of our cuts and of PySceneDetect's against the truth and against each other
(a cut matches when it is within ``--tolerance`` frames). Times are the best of ``--reps``
interleaved rounds.

    python benchmarks/cut_detection.py [--size 256] [--shots 12] [--shot-frames 40] [--lossless]

Prints one JSON object.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from lvg.data.cuts import detect_cuts, detect_cuts_pyscenedetect, frame_scores
from lvg.data.reader import available_backends, open_video
from lvg.data.toy_world import ToyWorldConfig, render_video, sample_video_spec
from lvg.media import VideoWriter

FPS = 24


def texture(seed: int, height: int, width: int, cell: int) -> np.ndarray:
    """``(H, W, 3)`` uint8 smooth random colours (coarse random grid, bicubically upsampled)."""
    g = torch.Generator().manual_seed(seed)
    coarse = torch.rand(1, 3, height // cell + 1, width // cell + 1, generator=g) * 255
    fine = F.interpolate(coarse, size=(height, width), mode="bicubic", align_corners=False)
    return fine.clamp(0, 255).round().to(torch.uint8)[0].permute(1, 2, 0).numpy()


def make_video(
    path: Path, size: int, shots: int, shot_frames: int, lossless: bool, grain: float
) -> tuple[int, list[int]]:
    """Write the test video shot by shot; return its frame count and true cuts."""
    rng = np.random.default_rng(0)
    toy = ToyWorldConfig(size=size, fps=FPS, min_seconds=4, max_seconds=4)
    cuts, total = [], 0
    with VideoWriter(path, FPS, lossless=lossless) as writer:
        for k in range(shots):
            n = max(16, int(shot_frames * rng.uniform(0.6, 1.4)))  # >= min_shot_frames, as the truth assumes
            if k == shots // 2:  # a long pan: 3 shots' worth of frames, 4 px per frame, no cut inside
                n = 3 * shot_frames
                world = texture(1000 + k, size, size + 4 * n, cell=size // 8)
                frames = np.stack([world[:, 4 * t : 4 * t + size] for t in range(n)])
            elif k % 2 == 0:
                frames = render_video(sample_video_spec(toy, k))[0][:n]
                n = len(frames)
            else:
                frames = np.repeat(texture(k, size, size, cell=size // 8)[None], n, axis=0)
            if grain:  # sensor-like noise: a realistic bitrate, so decoding costs what it does on real video
                frames = np.clip(frames + rng.normal(0, grain, frames.shape), 0, 255).astype(np.uint8)
            if k:
                cuts.append(total)
            writer.write(frames)
            total += n
    return total, cuts


def best_times(fns: dict[str, Callable[[], object]], reps: int) -> tuple[dict[str, float], dict[str, object]]:
    """Best wall time of each function over ``reps`` rounds, and its result.

    Rounds interleave the functions (after one untimed warm-up round), so a machine whose load
    drifts during the run biases none of them.
    """
    results = {name: fn() for name, fn in fns.items()}
    best = dict.fromkeys(fns, float("inf"))
    for _ in range(reps):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            best[name] = min(best[name], time.perf_counter() - start)
    return best, results


def precision_recall(found: list[int], reference: list[int], tolerance: int) -> dict[str, float]:
    matched = {c for c in found if any(abs(c - r) <= tolerance for r in reference)}
    recalled = {r for r in reference if any(abs(c - r) <= tolerance for c in found)}
    return {
        "precision": round(len(matched) / len(found), 4) if found else 1.0,
        "recall": round(len(recalled) / len(reference), 4) if reference else 1.0,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=256, help="frame height = width (a multiple of 16)")
    parser.add_argument("--shots", type=int, default=12)
    parser.add_argument("--shot-frames", type=int, default=40, help="mean frames per shot")
    parser.add_argument("--lossless", action="store_true", help="libx264rgb qp 0 instead of libx264 yuv420p crf 18")
    parser.add_argument("--grain", type=float, default=6.0, help="std of per-pixel noise added (grey levels)")
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--torch-threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    parser.add_argument("--tolerance", type=int, default=1, help="frames a matching cut may be off by")
    args = parser.parse_args()
    if args.torch_threads:
        torch.set_num_threads(args.torch_threads)

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "cuts.mp4"
        num_frames, truth = make_video(path, args.size, args.shots, args.shot_frames, args.lossless, args.grain)
        report: dict[str, object] = {
            "video": {"frames": num_frames, "size": args.size, "fps": FPS, "cuts": len(truth),
                      "codec": "libx264rgb qp0" if args.lossless else "libx264 yuv420p crf18",
                      "grain": args.grain, "megabytes": round(path.stat().st_size / 2**20, 2)},
            "machine": {"cpu": platform.processor() or platform.machine(), "torch_threads": torch.get_num_threads(),
                        "cpus": os.cpu_count()},
            "truth": truth,
        }

        def decode_only(backend: str) -> int:
            with open_video(path, backend) as reader:
                return sum(len(frames) for _, frames in reader.iter_chunks(64))

        def detect(backend: str) -> list[int]:
            with open_video(path, backend) as reader:
                return detect_cuts(reader)

        with open_video(path, "pyav") as reader:
            frames = reader.read(range(num_frames))
        backends = [b for b in ("pyav", "decord") if b in available_backends()]
        fns: dict[str, Callable[[], object]] = {"scores": lambda: frame_scores(frames)}
        for backend in backends:
            fns[f"{backend}_decode"] = lambda b=backend: decode_only(b)
            fns[f"{backend}_detect"] = lambda b=backend: detect(b)
        have_psd = importlib.util.find_spec("scenedetect") is not None
        if have_psd:
            fns["pyscenedetect"] = lambda: detect_cuts_pyscenedetect(path)
        times, results = best_times(fns, args.reps)
        for backend in backends:
            assert results[f"{backend}_decode"] == num_frames, (results[f"{backend}_decode"], num_frames)
            report[backend] = {
                "decode_fps": round(num_frames / times[f"{backend}_decode"], 1),
                "detect_fps": round(num_frames / times[f"{backend}_detect"], 1),
                "detect_over_decode": round(times[f"{backend}_decode"] / times[f"{backend}_detect"], 3),
            }
        report["scores_fps_on_decoded_frames"] = round(num_frames / times["scores"], 1)
        ours = results[f"{backends[0]}_detect"]
        report["ours"] = {
            "cuts": ours, "vs_truth": precision_recall(ours, truth, args.tolerance),
            "same_cuts_on_every_backend": all(results[f"{b}_detect"] == ours for b in backends),
        }

        if have_psd:
            import scenedetect

            theirs = results["pyscenedetect"]
            report["pyscenedetect"] = {
                "version": scenedetect.__version__,
                "fps": round(num_frames / times["pyscenedetect"], 1),
                "cuts": theirs,
                "vs_truth": precision_recall(theirs, truth, args.tolerance),
                "ours_vs_theirs": precision_recall(ours, theirs, args.tolerance),
            }
        else:
            report["pyscenedetect"] = "not installed (pip install scenedetect)"
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
