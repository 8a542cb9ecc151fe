"""lvg's VBench metrics against VBench's own code, on the same frames and the same (random) weights.

VBench is the oracle: its dimension functions (``vbench/<dimension>.py``) run unmodified except that their video
readers are replaced by the frames lvg sees, and their networks are built by the original code (DINO's
``vision_transformer.py``, OpenAI ``clip``, VBench's vendored RAFT and AMT-S) from random weights that lvg loads
from files in the formats users have on disk (``dino_vitbase16_pretrain.pth``, ``open_clip_model.safetensors``,
``sa_0_4_vit_l_14_linear.pth``, ``raft-things.pth``, ``amt-s.pth``, MUSIQ's checkpoint). Imaging quality uses
pyiqa's MUSIQ when pyiqa is installed, else the same stub scorer on both sides. Nothing is downloaded; none of
the oracle code is part of lvg.

Needs (not lvg dependencies): a directory holding the ``vbench`` package (a VBench clone, or the PyPI wheel
unpacked), a facebookresearch/dino checkout, OpenAI's ``clip`` package importable (``pip install openai-clip`` or
``--oracle-path``), and what those modules import: ``opencv-python-headless easydict omegaconf imageio scipy ftfy
regex`` (``decord`` and ``pyiqa`` are stubbed when missing: the frames and the scorer are injected).

    python benchmarks/vbench_parity.py --vbench ~/src/VBench --dino ~/src/dino [--metrics subject_consistency ...]

Prints one JSON object ``{"videos": [...], "metrics": {name: {"lvg", "vbench", "max_abs_diff", ...}}}``: per-video
values from both sides, their largest absolute difference and that of the overall value. For the CLIP metrics it
also reports how far OpenAI's and open_clip's implementations of the same network drift apart in fp32 on identical
inputs (``openai_vs_open_clip_feature_max_abs_diff``: the floor for the metric differences there) and VBench's code
run around lvg's own CLIP tower (``same_network_max_abs_diff``: everything but the network implementation).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import tempfile
import time
import types
import warnings
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

METRICS = ("subject_consistency", "background_consistency", "aesthetic_quality", "imaging_quality",
           "dynamic_degree", "motion_smoothness")
# (height, width, frames, fps): F1's 480p landscape, a near-square size (DINO interpolates its position table
# although the grid is native), a square one.
VIDEOS = ((480, 832, 10, 24.0), (256, 270, 9, 8.0), (320, 320, 7, 16.0))


def make_video(h: int, w: int, t: int, seed: int) -> np.ndarray:
    """(T, H, W, 3) uint8: a smooth random texture panning 3 px/frame with a square moving across it."""
    g = torch.Generator().manual_seed(seed)
    texture = F.interpolate(torch.rand(1, 3, h // 16 + 2, w // 16 + 2 + t, generator=g), scale_factor=16,
                            mode="bicubic", align_corners=False)[0].clamp(0, 1)
    frames = []
    for i in range(t):
        frame = texture[:, :h, 3 * i:3 * i + w].clone()
        y, x = h // 4 + 2 * i, w // 5 + 9 * i
        frame[:, y:y + h // 4, x:x + h // 4] = torch.tensor([0.9, 0.2, 0.1]).view(3, 1, 1)
        frames.append(frame)
    return (torch.stack(frames).permute(0, 2, 3, 1) * 255).round().to(torch.uint8).numpy()


def stub_module(name: str, **attrs) -> None:
    """Register an importable placeholder module (and its parents) unless the real one imports."""
    try:
        __import__(name)
        return
    except ImportError:
        pass
    parts = name.split(".")
    for i in range(1, len(parts) + 1):
        sys.modules.setdefault(".".join(parts[:i]), types.ModuleType(".".join(parts[:i])))
    for key, value in attrs.items():
        setattr(sys.modules[name], key, value)


def randomise(module: torch.nn.Module, std: float, seed: int) -> torch.nn.Module:
    """Re-draw every weight matrix/conv kernel N(0, std) (biases, norms kept): random ViTs at their init scale give
    nearly constant CLS features, which would make the comparison trivially 1 == 1."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            if p.ndim >= 2:
                p.copy_(torch.randn(p.shape, generator=g) * std)
    return module.eval()


class SameNetwork:
    """OpenAI CLIP's ``encode_image`` interface (what VBench calls) over lvg's open_clip image tower."""

    def __init__(self, visual: torch.nn.Module) -> None:
        self.visual = visual

    def encode_image(self, images: torch.Tensor) -> torch.Tensor:
        return self.visual(images)

    def eval(self) -> SameNetwork:
        return self


def compare(ours: list[float], theirs: list[float], ours_all: float, theirs_all: float, **extra) -> dict:
    diffs = [abs(a - b) for a, b in zip(ours, theirs, strict=True)]
    return {"lvg": ours, "vbench": theirs, "lvg_overall": ours_all, "vbench_overall": theirs_all,
            "max_abs_diff": max(diffs), "overall_abs_diff": abs(ours_all - theirs_all), **extra}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--vbench", type=Path, required=True, help="directory containing the vbench package")
    parser.add_argument("--dino", type=Path, required=True, help="facebookresearch/dino checkout")
    parser.add_argument("--oracle-path", type=Path, nargs="*", default=[],
                        help="extra sys.path entries (e.g. where OpenAI's clip package lives)")
    parser.add_argument("--metrics", nargs="*", default=list(METRICS), choices=METRICS)
    args = parser.parse_args()
    if not (args.vbench / "vbench" / "subject_consistency.py").is_file():
        parser.error(f"--vbench {args.vbench}: no vbench/subject_consistency.py there; pass a VBench clone or the "
                     "unpacked PyPI wheel (pip download --no-deps vbench && unzip vbench-*.whl)")
    if not (args.dino / "vision_transformer.py").is_file():
        parser.error(f"--dino {args.dino}: no vision_transformer.py there; pass a facebookresearch/dino checkout")

    for path in (args.vbench, args.dino, *args.oracle_path):
        sys.path.insert(0, str(path.resolve()))
    stub_module("decord", VideoReader=None, cpu=None)
    stub_module("pyiqa.archs.musiq_arch", MUSIQ=None)
    warnings.filterwarnings("ignore")
    torch.set_grad_enabled(False)

    from lvg.metrics import consistency, motion, quality

    videos = {f"v{i}_{h}x{w}.mp4": (make_video(h, w, t, i), fps) for i, (h, w, t, fps) in enumerate(VIDEOS)}
    names = list(videos)

    def load_video(path, *args, **kwargs):  # vbench.utils.load_video on an mp4: float (T, C, H, W) 0..255
        return torch.from_numpy(videos[path][0]).float().permute(0, 3, 1, 2)

    def ours(metric) -> tuple[list[float], float]:
        per_video = []
        for name in names:
            frames, fps = videos[name]
            (score,) = metric.clip_scores(torch.from_numpy(frames).permute(0, 3, 1, 2).float(), fps, [slice(None)])
            metric.update(scores=[score])
            per_video.append(score[0] / score[1])
        return per_video, float(metric.compute())

    tmp = Path(tempfile.mkdtemp(prefix="vbench_parity_"))
    results, seconds = {}, {}
    oracle_prints = contextlib.redirect_stdout(sys.stderr)  # VBench prints progress to stdout; the JSON is ours
    oracle_prints.__enter__()
    for name in args.metrics:
        start = time.perf_counter()
        torch.manual_seed(0)  # initialisers randomise() leaves in place (conv biases) draw from the global generator
        if name == "subject_consistency":
            import vision_transformer
            from vbench import subject_consistency as oracle

            dino = randomise(vision_transformer.vit_base(patch_size=16, num_classes=0), 0.05, 0)
            torch.save(dino.state_dict(), tmp / "dino_vitbase16_pretrain.pth")
            oracle.load_video = load_video
            theirs_all, records = oracle.subject_consistency(dino, names, "cpu", read_frame=False)
            per_video, overall = ours(consistency.SubjectConsistency(tmp / "dino_vitbase16_pretrain.pth"))
        elif name in ("background_consistency", "aesthetic_quality"):
            import clip.model
            import open_clip
            from safetensors.torch import save_file

            arch = "ViT-B-32-quickgelu" if name == "background_consistency" else "ViT-L-14-quickgelu"
            state = randomise(open_clip.create_model(arch), 0.02, 1).state_dict()
            folder = tmp / arch
            folder.mkdir()
            save_file({k: v.contiguous() for k, v in state.items()}, str(folder / "open_clip_model.safetensors"))

            def open_clip_visual(path, arch=arch):
                return consistency.load_clip_visual(arch, path, "parity")
            openai_clip = clip.model.build_model(dict(state)).float().eval()
            # The two CLIP implementations on identical inputs: their fp32 rounding bounds what lvg can match.
            x = consistency.clip_preprocess(load_video(names[0]))
            a, b = (F.normalize(f, dim=-1) for f in (openai_clip.encode_image(x), open_clip_visual(folder)(x)))
            results[name] = {"openai_vs_open_clip_feature_max_abs_diff": float((a - b).abs().max())}
            if name == "background_consistency":
                from vbench import background_consistency as oracle

                oracle.load_video = load_video
                theirs_all, records = oracle.background_consistency(openai_clip, None, names, "cpu", False)
                metric = consistency.BackgroundConsistency(folder)
                _, same = oracle.background_consistency(SameNetwork(metric.net("clip")), None, names, "cpu", False)
                per_video, overall = ours(metric)
            else:
                from vbench import aesthetic_quality as oracle

                head = randomise(torch.nn.Linear(768, 1), 1.0, 2)
                torch.save(head.state_dict(), tmp / "sa_0_4_vit_l_14_linear.pth")
                oracle.load_video, oracle.batch_size = load_video, 32
                theirs_all, records = oracle.laion_aesthetic(head, openai_clip, names, "cpu")
                metric = quality.AestheticQuality(folder, tmp / "sa_0_4_vit_l_14_linear.pth")
                _, same = oracle.laion_aesthetic(head, SameNetwork(metric.net("clip")), names, "cpu")
                per_video, overall = ours(metric)
            # VBench's code around lvg's own CLIP tower: everything but the network implementation compared.
            results[name]["same_network_max_abs_diff"] = max(
                abs(a - r["video_results"]) for a, r in zip(per_video, same, strict=True))
        elif name == "imaging_quality":
            from pyiqa.archs.musiq_arch import MUSIQ
            from vbench import imaging_quality as oracle

            oracle.load_video = load_video
            if MUSIQ is not None:  # pyiqa installed: its MUSIQ, loaded as VBench does (training flag only)
                musiq = randomise(MUSIQ(pretrained=False), 0.05, 3)
                torch.save(musiq.state_dict(), tmp / "musiq_spaq_ckpt-358bb6af.pth")
                scorer = MUSIQ(pretrained_model_path=str(tmp / "musiq_spaq_ckpt-358bb6af.pth"))
                scorer.training = False
                ours_scorer, results[name] = tmp / "musiq_spaq_ckpt-358bb6af.pth", {"scorer": "pyiqa MUSIQ"}
            else:  # the same stub on both sides: checks the resize rule and the reductions
                scorer = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 5, stride=2), torch.nn.GELU(),
                                             torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(),
                                             torch.nn.Linear(8, 1), torch.nn.Sigmoid())
                scorer = randomise(scorer, 1.0, 3)

                def ours_scorer(x, scorer=scorer):  # (N, 3, h, w) in [0, 1] -> (N, 1) in 0..100, as MUSIQ
                    return scorer(x) * 100

                scorer, results[name] = ours_scorer, {"scorer": "stub (pyiqa not installed)"}
            theirs_all, records = oracle.technical_quality(scorer, names, "cpu",
                                                           imaging_quality_preprocessing_mode="longer")
            # VBench keeps per-video values in 0..100 and divides only the overall; lvg divides both.
            records = [{**r, "video_results": r["video_results"] / 100} for r in records]
            per_video, overall = ours(quality.ImagingQuality(ours_scorer))
        elif name == "dynamic_degree":
            from easydict import EasyDict
            from vbench import dynamic_degree as oracle
            from vbench.third_party.RAFT.core.raft import RAFT

            raft = randomise(RAFT(EasyDict(small=False, mixed_precision=False, alternate_corr=False)), 0.05, 4)
            torch.save({f"module.{k}": v for k, v in raft.state_dict().items()}, tmp / "raft-things.pth")
            dynamic = oracle.DynamicDegree.__new__(oracle.DynamicDegree)
            dynamic.device, dynamic.model = "cpu", raft
            pair_scores = {}

            def get_frames(path, dynamic=dynamic):
                frames, fps = videos[path]
                frame_list = [torch.from_numpy(f).permute(2, 0, 1).float()[None] for f in frames]
                return dynamic.extract_frame(frame_list, max(1, round(fps / 8)))

            def check_move(scores, dynamic=dynamic, check=oracle.DynamicDegree.check_move, pair_scores=pair_scores):
                pair_scores.setdefault("vbench", []).append(list(scores))
                return check(dynamic, scores)

            dynamic.get_frames, dynamic.check_move = get_frames, check_move
            theirs_all, records = oracle.dynamic_degree(dynamic, names)
            metric = motion.DynamicDegree(tmp / "raft-things.pth")
            pair_scores["lvg"] = [metric.pair_scores(torch.from_numpy(videos[n][0]).permute(0, 3, 1, 2).float(),
                                                     videos[n][1]).tolist() for n in names]
            per_video, overall = ours(metric)
            flat = [(a, b) for x, y in zip(pair_scores["lvg"], pair_scores["vbench"]) for a, b in zip(x, y)]
            results[name] = {"pair_scores_max_abs_diff": max(abs(a - b) for a, b in flat),
                             "pair_score_range": [min(b for _, b in flat), max(b for _, b in flat)]}
        else:  # motion_smoothness
            from vbench import motion_smoothness as oracle
            from vbench.third_party.amt.utils.build_utils import build_from_cfg

            config = args.vbench / "vbench" / "third_party" / "amt" / "cfgs" / "AMT-S.yaml"
            from omegaconf import OmegaConf

            amt = randomise(build_from_cfg(OmegaConf.load(config).network), 0.05, 5)
            torch.save({"state_dict": amt.state_dict()}, tmp / "amt-s.pth")
            smooth = oracle.MotionSmoothness(str(config), str(tmp / "amt-s.pth"), "cpu")
            smooth.fp.get_frames = lambda path: list(videos[path][0])
            theirs_all, records = oracle.motion_smoothness(smooth, names)
            amt_root = args.vbench / "vbench" / "third_party" / "amt"
            per_video, overall = ours(motion.MotionSmoothness(amt_root=amt_root, amt_weights=tmp / "amt-s.pth"))
        theirs = [float(r["video_results"]) for r in records]
        results[name] = compare(per_video, theirs, overall, float(theirs_all), **results.get(name, {}))
        seconds[name] = round(time.perf_counter() - start, 1)
        print(f"{name}: max |lvg - vbench| = {results[name]['max_abs_diff']:.3g}", file=sys.stderr)

    oracle_prints.__exit__(None, None, None)
    print(json.dumps({"videos": [f"{h}x{w}, {t} frames, {fps:g} fps" for h, w, t, fps in VIDEOS],
                      "torch": torch.__version__, "metrics": results, "seconds": seconds}, indent=1))


if __name__ == "__main__":
    main()
