"""VBench motion dimensions: dynamic degree (RAFT optical flow) and motion smoothness (frame interpolation).

Both follow ``/work/shared/specs/metrics.md`` (VBench ``dynamic_degree.py`` / ``motion_smoothness.py``) on
float frames in 0..255, layout (T, 3, H, W).

* :class:`DynamicDegree` runs torchvision's RAFT large with the "things" weights VBench uses (its own
  ``raft-things.pth``, renamed on load, or torchvision's port ``Raft_Large_Weights.C_T_V1``), 20 flow updates;
  the converted weights give bit-identical flow to VBench's vendored RAFT. VBench subsamples mp4 frames to about
  8 fps and then requires ``round(4 N / 16)`` of the ``N - 1`` pair scores to exceed ``6 min(H, W) / 256``;
  with ``N <= 2`` that count is 0, so any two-frame clip is "dynamic" — a VBench quirk we keep for parity.
* :class:`MotionSmoothness` needs AMT-S. AMT's code is CC BY-NC 4.0 and is **not** part of lvg: pass any
  interpolator callable, or point :func:`load_amt_interpolator` at your own AMT checkout and ``amt-s.pth``
  (using them is your responsibility under their licence).
"""

from __future__ import annotations

import importlib
import re
import sys
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lvg.metrics.video import MissingWeightsError, VideoMetric, Weights, frozen, load_feature_net

FlowFn = Callable[[Tensor, Tensor], Tensor]
"""``(img1, img2) -> flow``: images float (N, 3, H, W) in [-1, 1], flow (N, 2, H, W) in pixels."""
Interpolator = Callable[[Tensor, Tensor, float], Tensor]
"""``(frame0, frame1, t) -> frame_t``: frames float (N, 3, H, W) in [0, 1] (RGB), output the same layout/range."""

RAFT_MIN_SIZE = 128
"""torchvision RAFT downsamples by 8 and builds a 4-level correlation pyramid: smaller inputs fail."""


def frame_interval(fps: float | None) -> int:
    """VBench's mp4 subsampling step ``max(1, round(fps / 8))`` (Python round: halves to even); 1 without fps."""
    return 1 if fps is None else max(1, round(fps / 8))


def count_threshold(num_frames: int) -> int:
    """Pair scores above the threshold needed for a dynamic video: ``round(4 * N / 16)`` for N sampled frames."""
    return round(4 * num_frames / 16)


def pad_replicate(x: Tensor, multiple: int) -> tuple[Tensor, tuple[int, int, int, int]]:
    """Replicate-pad (..., H, W) up to multiples of ``multiple``, split evenly with the extra row/column at the
    bottom/right (RAFT/AMT ``InputPadder`` "sintel" layout).

    Returns:
        The padded tensor and the ``(left, right, top, bottom)`` padding (the argument of ``F.pad``).
    """
    pad_h, pad_w = -x.shape[-2] % multiple, -x.shape[-1] % multiple
    pad = (pad_w // 2, pad_w - pad_w // 2, pad_h // 2, pad_h - pad_h // 2)
    if not any(pad):
        return x, pad
    return F.pad(x, pad, mode="replicate"), pad


def top_flow_score(flow: Tensor) -> Tensor:
    """Per pair mean of the top ``int(H * W * 0.05)`` flow magnitudes of (N, 2, H, W) flow -> (N,)."""
    magnitude = flow.float().norm(dim=1).flatten(1)  # (N, H*W)
    cut = int(flow.shape[-2] * flow.shape[-1] * 0.05)
    return magnitude.topk(cut, dim=1).values.mean(dim=1)


RAFT_NEEDED = ("RAFT large 'things' weights: VBench's raft-things.pth (princeton-vl/RAFT, "
               "dl.dropboxusercontent.com/s/4j4z58wuv8o0mfz/models.zip, unpacked by VBench under "
               "~/.cache/vbench/raft_model/models/) or torchvision's port 'raft_large_C_T_V1-22a6c225.pth' "
               "(download.pytorch.org/models/raft_large_C_T_V1-22a6c225.pth)")

# princeton-vl/RAFT parameter names -> torchvision's, applied in order (first match per rule).
_RAFT_RENAMES = (
    (r"^fnet\.", "feature_encoder."),
    (r"^cnet\.", "context_encoder."),
    (r"^(\w+_encoder)\.conv1\.", r"\1.convnormrelu.0."),
    (r"^(\w+_encoder)\.norm1\.", r"\1.convnormrelu.1."),
    (r"^(\w+_encoder)\.conv2\.", r"\1.conv."),
    (r"\.(layer\d\.\d)\.conv(\d)\.", r".\1.convnormrelu\2.0."),
    (r"\.(layer\d\.\d)\.norm([12])\.", r".\1.convnormrelu\2.1."),
    (r"^update_block\.encoder\.conv([cf])([12])\.",
     lambda m: f"update_block.motion_encoder.conv{'corr' if m[1] == 'c' else 'flow'}{m[2]}.0."),
    (r"^update_block\.encoder\.conv\.", "update_block.motion_encoder.conv.0."),
    (r"^update_block\.gru\.conv([zrq])([12])\.", r"update_block.recurrent_block.convgru\2.conv\1."),
    (r"^update_block\.mask\.0\.", "mask_predictor.convrelu.0."),
    (r"^update_block\.mask\.2\.", "mask_predictor.conv."),
)


def raft_state_from_princeton(state: dict[str, Tensor]) -> dict[str, Tensor]:
    """Rename a princeton-vl/RAFT state dict (``raft-things.pth``, the file VBench loads; with or without
    DataParallel's ``module.`` prefix) to torchvision ``raft_large``'s names. Residual blocks' ``norm3`` is dropped:
    it is the same module as ``downsample.1`` and is saved twice."""
    out = {}
    for key, value in state.items():
        key = key.removeprefix("module.")
        if re.search(r"\.layer\d\.\d\.norm3\.", key):
            continue
        for pattern, repl in _RAFT_RENAMES:
            key = re.sub(pattern, repl, key, count=1)
        out[key] = value
    return out


class RaftFlow(nn.Module):
    """torchvision RAFT as a :data:`FlowFn`: the last of ``num_flow_updates`` refinements."""

    def __init__(self, raft: nn.Module, num_flow_updates: int = 20) -> None:
        super().__init__()
        self.raft, self.num_flow_updates = raft, num_flow_updates

    def forward(self, img1: Tensor, img2: Tensor) -> Tensor:
        return self.raft(img1, img2, num_flow_updates=self.num_flow_updates)[-1]


def load_raft(weights: Weights | FlowFn, num_flow_updates: int = 20) -> FlowFn:
    """torchvision ``raft_large`` as a frozen :data:`FlowFn`.

    Args:
        weights: A torchvision RAFT module (run with ``num_flow_updates``); any other module or callable
            :data:`FlowFn` (e.g. a stub), used as is; a local path (or a directory holding it) to VBench's
            ``raft-things.pth`` (princeton-vl names, converted by :func:`raft_state_from_princeton`) or to
            torchvision's port of it (``Raft_Large_Weights.C_T_V1``); ``"hub"`` for torchvision's download;
            ``None`` for random weights (tests, benchmarks; warns).
        num_flow_updates: RAFT refinement iterations (VBench: 20).
    """
    from torchvision.models.optical_flow import RAFT, Raft_Large_Weights, raft_large

    if isinstance(weights, RAFT):
        return frozen(RaftFlow(weights, num_flow_updates))
    if callable(weights) and not isinstance(weights, nn.Module):
        return weights

    def load(path: Path) -> nn.Module:
        model = raft_large(weights=None)
        state = torch.load(path, map_location="cpu", weights_only=True)
        if any(k.removeprefix("module.").startswith("fnet.") for k in state):
            state = raft_state_from_princeton(state)
        model.load_state_dict(state)
        return RaftFlow(model, num_flow_updates)

    return load_feature_net(weights, metric="DynamicDegree", needed=RAFT_NEEDED,
                            names=("raft-things.pth", "raft_large_C_T_V1-22a6c225.pth"),
                            build=lambda: RaftFlow(raft_large(weights=None), num_flow_updates), load=load,
                            hub=lambda: RaftFlow(raft_large(weights=Raft_Large_Weights.C_T_V1), num_flow_updates))


class DynamicDegree(VideoMetric):
    """VBench dynamic degree: fraction of videos whose RAFT flow is large enough in enough frame pairs.

    Per video: sample frames 0, k, 2k, ... (``k = max(1, round(fps / 8))``, no subsampling when ``fps`` is None,
    i.e. image folders), replicate-pad every pair to multiples of 8, run RAFT on [-1, 1] inputs and score a pair
    by the mean of its top 5 % flow magnitudes over the padded field. The video is dynamic (1.0) iff
    ``#(score > 6 min(H, W) / 256) >= round(4 N / 16)``, else 0.0. Frames must be at least 128 px on each side
    for torchvision's RAFT.

    Args:
        weights: RAFT large (see :func:`load_raft`): a local path, ``"hub"``, ``None`` (random), a RAFT module, or
            any flow module/callable (see :data:`FlowFn`), e.g. a stub in tests.
        num_flow_updates: RAFT refinement iterations (VBench: 20); the last flow is used.
        batch_size: Frame pairs per flow call.
        **kwargs: Passed to :class:`torchmetrics.Metric`.
    """

    name = "dynamic_degree"
    min_frames = 2
    higher_is_better = True

    def __init__(self, weights: Weights | FlowFn, num_flow_updates: int = 20, batch_size: int = 8, **kwargs) -> None:
        super().__init__(**kwargs)
        self.batch_size = batch_size
        flow = load_raft(weights, num_flow_updates)
        self._is_raft = isinstance(flow, RaftFlow)
        # Modules go in self._nets (follow metric.to(), stay out of state_dict()); a plain callable in a tuple.
        if isinstance(flow, nn.Module):
            self._nets["flow"] = flow
        self._flow_fn = (flow,)

    def flow(self, img1: Tensor, img2: Tensor) -> Tensor:
        """Optical flow (N, 2, H, W) from img1 to img2, both float (N, 3, H, W) in [-1, 1], H, W multiples of 8."""
        return (self.net("flow") if "flow" in self._nets else self._flow_fn[0])(img1, img2)

    @torch.no_grad()
    def pair_scores(self, video: Tensor, fps: float | None = None) -> Tensor:
        """Top-5 % flow score of each consecutive pair of sampled frames, (N - 1,), from (T, 3, H, W) 0..255."""
        frames = video[::frame_interval(fps)].float()
        h, w = frames.shape[-2:]
        if min(h, w) < RAFT_MIN_SIZE and self._is_raft:
            raise ValueError(f"DynamicDegree: frames are {h}x{w}; torchvision RAFT needs >= {RAFT_MIN_SIZE} px per "
                             f"side (resize the videos, VBench scores native resolution)")
        frames, _ = pad_replicate(frames / 127.5 - 1.0, 8)  # RAFT input range [-1, 1]
        pairs = len(frames) - 1
        scores = []
        for i in range(0, pairs, self.batch_size):
            j = min(i + self.batch_size, pairs)
            scores.append(top_flow_score(self.flow(frames[i:j], frames[i + 1:j + 1])))
        return torch.cat(scores)

    def video_score(self, video: Tensor, fps: float | None) -> tuple[float, float]:
        scores = self.pair_scores(video, fps)
        num_frames = len(scores) + 1
        threshold = 6.0 * min(video.shape[-2:]) / 256.0
        dynamic = int((scores > threshold).sum()) >= count_threshold(num_frames)
        return float(dynamic), 1.0


def load_amt_interpolator(amt_root: str | Path, checkpoint: str | Path,
                          device: torch.device | str = "cpu") -> Interpolator:
    """AMT-S from the user's own AMT checkout (github.com/MCG-NKU/AMT) and ``amt-s.pth``.

    AMT's code and weights are licensed CC BY-NC 4.0; lvg neither ships nor downloads them, and using them is the
    user's responsibility. The network is built as AMT's ``cfgs/AMT-S.yaml`` does (``networks/AMT-S.py``,
    ``corr_radius=3, corr_lvls=4, num_flows=3``) and run at full resolution (``scale_factor=1.0``).

    Args:
        amt_root: Directory containing AMT's ``networks/`` package: an AMT checkout, or the copy an installed
            VBench carries (``vbench/third_party/amt``, which gives VBench's numbers to 6e-8 with the same weights).
        checkpoint: ``amt-s.pth`` (a dict with ``"state_dict"``).
        device: Where to run the network.

    Returns:
        An :data:`Interpolator` (frames float (N, 3, H, W) in [0, 1], H and W multiples of 16).
    """
    root, checkpoint = Path(amt_root), Path(checkpoint)
    if not (root / "networks" / "AMT-S.py").is_file():
        raise MissingWeightsError(f"MotionSmoothness: {root / 'networks' / 'AMT-S.py'} not found; amt_root must be a "
                                  f"checkout of github.com/MCG-NKU/AMT (CC BY-NC 4.0)")
    if not checkpoint.is_file():
        raise MissingWeightsError(f"MotionSmoothness: AMT-S checkpoint {str(checkpoint)!r} not found ('amt-s.pth', "
                                  f"CC BY-NC 4.0, huggingface.co/lalala125/AMT/resolve/main/amt-s.pth)")
    sys.path.insert(0, str(root))
    try:
        model_cls = importlib.import_module("networks.AMT-S").Model
    finally:
        sys.path.remove(str(root))
    model = model_cls(corr_radius=3, corr_lvls=4, num_flows=3)
    model.load_state_dict(torch.load(checkpoint, map_location="cpu", weights_only=False)["state_dict"])
    model = frozen(model).to(device)

    @torch.no_grad()
    def interpolate(frame0: Tensor, frame1: Tensor, t: float) -> Tensor:
        embt = torch.full((len(frame0), 1, 1, 1), t, device=device)
        out = model(frame0.to(device), frame1.to(device), embt, scale_factor=1.0, eval=True)["imgt_pred"]
        return out.to(frame0.device)

    return interpolate


class MotionSmoothness(VideoMetric):
    """VBench motion smoothness: how well a frame interpolator predicts the odd frames from the even ones.

    Per video (T >= 3): E = frames[0::2], O = frames[1::2]; E is replicate-padded to multiples of 16 (no
    downscaling), the interpolator predicts the middle of each (E_k, E_k+1) at t = 0.5, the prediction is cropped
    back and converted to uint8 by truncation (after clamping to 0..255, as VBench's ``tensor2img``), and
    ``score = (255 - mean_k mean |P_k - O_k|) / 255``. Overall: mean over videos.

    Args:
        interpolator: ``(frame0, frame1, t) -> frame_t`` on float (N, 3, H, W) frames in [0, 1]
            (see :data:`Interpolator`); a module is frozen and follows ``metric.to()``. Without it, ``amt_root``
            and ``amt_weights`` load AMT-S via :func:`load_amt_interpolator` (CC BY-NC 4.0, not shipped with lvg).
        amt_root: Local AMT checkout (or VBench's ``vbench/third_party/amt``).
        amt_weights: Local ``amt-s.pth``.
        batch_size: Frame pairs per interpolator call.
        **kwargs: Passed to :class:`torchmetrics.Metric`.
    """

    name = "motion_smoothness"
    min_frames = 3
    higher_is_better = True

    def __init__(self, interpolator: Interpolator | nn.Module | None = None, amt_root: str | Path | None = None,
                 amt_weights: str | Path | None = None, batch_size: int = 8, **kwargs) -> None:
        super().__init__(**kwargs)
        if interpolator is None:
            if amt_root is None or amt_weights is None:
                raise ValueError("MotionSmoothness needs an interpolator, or amt_root (a local AMT checkout) and "
                                 "amt_weights (amt-s.pth); AMT is CC BY-NC 4.0 and not shipped with lvg")
            interpolator = load_amt_interpolator(amt_root, amt_weights)
        self.batch_size = batch_size
        if isinstance(interpolator, nn.Module):
            self._nets["interpolator"] = frozen(interpolator)  # follows metric.to(), stays out of state_dict()
        self._interpolator = (interpolator,)

    def interpolate(self, frame0: Tensor, frame1: Tensor, t: float) -> Tensor:
        """The interpolator on float (N, 3, H, W) frames in [0, 1] (H, W multiples of 16) -> the frame at time t."""
        if "interpolator" in self._nets:
            return self.net("interpolator")(frame0, frame1, t)
        return self._interpolator[0](frame0, frame1, t)

    @torch.no_grad()
    def interpolation_error(self, video: Tensor) -> float:
        """``vfi = mean_k mean |P_k - O_k|`` in 0..255 units for a (T, 3, H, W) 0..255 video, T >= 3."""
        if len(video) < 3:
            raise ValueError(f"MotionSmoothness needs at least 3 frames per video, got {len(video)}")
        h, w = video.shape[-2:]
        evens, odds = video[0::2].float(), video[1::2].float()
        padded, (left, _, top, _) = pad_replicate(evens / 255.0, 16)
        pairs = len(evens) - 1  # with even T the last odd frame has no right neighbour and is not scored
        errors = []
        for i in range(0, pairs, self.batch_size):
            j = min(i + self.batch_size, pairs)
            middle = self.interpolate(padded[i:j], padded[i + 1:j + 1], 0.5)[..., top:top + h, left:left + w]
            predicted = (middle * 255.0).clamp(0, 255).to(torch.uint8).float()  # truncation, as VBench
            errors.append((predicted - odds[i:j]).abs().flatten(1).mean(dim=1))
        return float(torch.cat(errors).mean())

    def video_score(self, video: Tensor, fps: float | None) -> tuple[float, float]:
        return (255.0 - self.interpolation_error(video)) / 255.0, 1.0
