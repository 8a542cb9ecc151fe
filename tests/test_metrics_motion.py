from __future__ import annotations

import pytest
import torch

from lvg.metrics.motion import (
    DynamicDegree,
    MotionSmoothness,
    count_threshold,
    frame_interval,
    pad_replicate,
    raft_state_from_princeton,
    top_flow_score,
)
from lvg.metrics.video import MissingWeightsError


def constant_flow(magnitude: float):
    """Stub flow: every pixel moves by (3/5, 4/5) * magnitude, so |flow| = magnitude."""
    def flow(img1, img2):
        n, _, h, w = img1.shape
        return torch.tensor([0.6, 0.8]).view(1, 2, 1, 1).expand(n, 2, h, w) * magnitude
    return flow


@pytest.mark.parametrize(("fps", "interval"), [(8, 1), (12, 2), (16, 2), (20, 2), (24, 3), (25, 3), (30, 4),
                                               (60, 8), (None, 1), (4, 1)])
def test_frame_interval(fps, interval):
    assert frame_interval(fps) == interval


@pytest.mark.parametrize(("n", "count"), [(2, 0), (6, 2), (10, 2), (16, 4)])
def test_count_threshold(n, count):
    assert count_threshold(n) == count


# princeton-vl/RAFT names (raft-things.pth, as VBench loads it) -> torchvision raft_large, one per rename rule.
PRINCETON_TO_TORCHVISION = {
    "module.fnet.conv1.weight": "feature_encoder.convnormrelu.0.weight",
    "module.cnet.norm1.running_var": "context_encoder.convnormrelu.1.running_var",
    "module.fnet.conv2.bias": "feature_encoder.conv.bias",
    "module.cnet.layer2.0.conv2.weight": "context_encoder.layer2.0.convnormrelu2.0.weight",
    "module.cnet.layer3.1.norm1.weight": "context_encoder.layer3.1.convnormrelu1.1.weight",
    "module.fnet.layer2.0.downsample.0.weight": "feature_encoder.layer2.0.downsample.0.weight",
    "module.cnet.layer2.0.downsample.1.running_mean": "context_encoder.layer2.0.downsample.1.running_mean",
    "module.update_block.encoder.convc1.weight": "update_block.motion_encoder.convcorr1.0.weight",
    "module.update_block.encoder.convc2.bias": "update_block.motion_encoder.convcorr2.0.bias",
    "module.update_block.encoder.convf1.weight": "update_block.motion_encoder.convflow1.0.weight",
    "module.update_block.encoder.convf2.bias": "update_block.motion_encoder.convflow2.0.bias",
    "module.update_block.encoder.conv.weight": "update_block.motion_encoder.conv.0.weight",
    "module.update_block.gru.convz1.weight": "update_block.recurrent_block.convgru1.convz.weight",
    "module.update_block.gru.convq2.bias": "update_block.recurrent_block.convgru2.convq.bias",
    "module.update_block.flow_head.conv2.weight": "update_block.flow_head.conv2.weight",
    "module.update_block.mask.0.weight": "mask_predictor.convrelu.0.weight",
    "module.update_block.mask.2.bias": "mask_predictor.conv.bias",
}


def test_raft_things_names_map_onto_torchvision_raft_large(tmp_path):
    from torchvision.models.optical_flow import raft_large

    mapped = raft_state_from_princeton({k: torch.zeros(1) for k in PRINCETON_TO_TORCHVISION}
                                       | {"module.cnet.layer2.0.norm3.weight": torch.zeros(1)})
    assert mapped.keys() == set(PRINCETON_TO_TORCHVISION.values())  # norm3 (= downsample.1) dropped
    # The inverse direction covers every key: a princeton-named copy of raft_large loads back through the file path.
    inverse = {v: k for k, v in PRINCETON_TO_TORCHVISION.items()}
    model = raft_large(weights=None).eval()
    state = model.state_dict()
    renamed = {}
    for key, value in state.items():
        renamed[_princeton_name(key, inverse)] = value
    torch.save(renamed, tmp_path / "raft-things.pth")
    metric = DynamicDegree(tmp_path, num_flow_updates=2)  # a directory holding it, as VBench's cache does
    x = torch.rand(1, 3, 128, 128) * 2 - 1
    with torch.no_grad():
        torch.testing.assert_close(metric.flow(x, x.roll(2, -1)), model(x, x.roll(2, -1), num_flow_updates=2)[-1])


def _princeton_name(key: str, known: dict[str, str]) -> str:
    """A torchvision raft_large key in princeton-vl/RAFT spelling, written independently of the converter."""
    if key in known:
        return known[key]
    import re

    for tv, pr in (("feature_encoder.", "fnet."), ("context_encoder.", "cnet.")):
        key = key.replace(tv, pr)
    key = re.sub(r"\.convnormrelu([12])\.0\.", r".conv\1.", key)
    key = re.sub(r"\.convnormrelu([12])\.1\.", r".norm\1.", key)
    key = key.replace("net.convnormrelu.0.", "net.conv1.").replace("net.convnormrelu.1.", "net.norm1.")
    key = re.sub(r"^([fc]net)\.conv\.", r"\1.conv2.", key)
    key = key.replace("update_block.motion_encoder.convcorr1.0.", "update_block.encoder.convc1.")
    key = key.replace("update_block.motion_encoder.convcorr2.0.", "update_block.encoder.convc2.")
    key = key.replace("update_block.motion_encoder.convflow1.0.", "update_block.encoder.convf1.")
    key = key.replace("update_block.motion_encoder.convflow2.0.", "update_block.encoder.convf2.")
    key = key.replace("update_block.motion_encoder.conv.0.", "update_block.encoder.conv.")
    key = re.sub(r"update_block\.recurrent_block\.convgru([12])\.conv([zrq])\.", r"update_block.gru.conv\2\1.", key)
    key = key.replace("mask_predictor.convrelu.0.", "update_block.mask.0.")
    key = key.replace("mask_predictor.conv.", "update_block.mask.2.")
    return "module." + key


def test_pad_replicate_layout():
    x = torch.arange(5 * 11, dtype=torch.float32).view(1, 1, 5, 11)
    padded, pad = pad_replicate(x, 8)
    assert padded.shape == (1, 1, 8, 16)
    assert pad == (2, 3, 1, 2)  # (left, right, top, bottom): extra row/column at the bottom/right
    assert torch.equal(padded[..., 1:6, 2:13], x)
    assert torch.equal(padded[..., 0, 0], x[..., 0, 0]) and torch.equal(padded[..., -1, -1], x[..., -1, -1])
    padded16, pad16 = pad_replicate(x, 16)
    assert padded16.shape == (1, 1, 16, 16) and pad16 == (2, 3, 5, 6)
    same, none = pad_replicate(torch.zeros(2, 3, 16, 32), 16)
    assert same.shape == (2, 3, 16, 32) and none == (0, 0, 0, 0)


def test_top_flow_score_uses_top_five_percent():
    flow = torch.zeros(1, 2, 20, 20)  # 400 pixels -> top int(400 * 0.05) = 20 magnitudes
    flow[0, 0, :2, :5] = 3.0  # 10 pixels move by 3
    flow[0, 1, 5, :10] = 1.0  # 10 pixels move by 1, the rest are static
    assert top_flow_score(flow).item() == pytest.approx((10 * 3 + 10 * 1) / 20)
    flow[0, 0, 10, :10] = 2.0  # now the top 20 are ten 3s and ten 2s
    assert top_flow_score(flow).item() == pytest.approx(2.5)


def test_dynamic_degree_threshold_with_stub_flow():
    video = torch.zeros(16, 3, 64, 96)  # thres = 6 * 64 / 256 = 1.5
    for magnitude, expected in [(1.6, 1.0), (1.4, 0.0), (1.5, 0.0)]:  # strictly greater than the threshold
        metric = DynamicDegree(constant_flow(magnitude))
        assert metric.video_value(video) == expected
    metric = DynamicDegree(constant_flow(2.0))
    metric.update(video[None])
    metric.update(torch.zeros(1, 16, 3, 64, 96))
    assert metric.compute().item() == 1.0


def test_dynamic_degree_counts_moving_pairs_and_subsamples():
    seen = []

    def flow(img1, img2):
        # Pair i moves iff its first frame is bright; records the padded input shape and value range.
        seen.append((img1.shape, float(img1.min()), float(img1.max())))
        return (img1.mean(dim=(1, 2, 3)) > 0).float().view(-1, 1, 1, 1).expand(-1, 2, *img1.shape[-2:]) * 10

    video = torch.zeros(16, 3, 130, 130)
    video[:3] = 255.0  # pairs (0, 1) and (1, 2) and (2, 3) move: 3 < round(4 * 16 / 16) = 4 -> static
    metric = DynamicDegree(flow, batch_size=4)
    assert metric.video_value(video) == 0.0
    assert seen[0][0] == (4, 3, 136, 136) and seen[0][1:] == (-1.0, 1.0)  # padded to 8, in [-1, 1]
    video[3] = 255.0  # 4 moving pairs -> dynamic
    assert metric.video_value(video) == 1.0
    # fps 24 keeps frames 0, 3, 6, 9, 12, 15 (N = 6, need 2): frames 0 and 3 bright -> 2 moving pairs.
    assert metric.pair_scores(video, fps=24).shape == (5,)
    assert metric.video_value(video, fps=24) == 1.0
    video[3] = 0.0
    assert metric.video_value(video, fps=24) == 0.0


def test_dynamic_degree_random_raft_runs():
    with pytest.warns(UserWarning, match="(?i)random weights"):
        metric = DynamicDegree(weights=None, num_flow_updates=2)
    assert not any("raft" in k or "flow" in k for k in metric.state_dict())  # the net stays out of checkpoints
    video = torch.full((2, 2, 3, 128, 136), 128, dtype=torch.uint8)  # static; random RAFT may still call it dynamic
    metric.update(video)
    assert metric.compute().item() in (0.0, 0.5, 1.0)
    assert metric.pair_scores(video[0].float()).shape == (1,)
    with pytest.raises(ValueError, match="needs >= 128 px"):
        metric.video_value(torch.zeros(2, 3, 96, 160))


def oracle(video: torch.Tensor):
    """Interpolator returning the true middle frame (looked up from the even frame it starts at), in [0, 1]."""
    def interpolate(frame0, frame1, t):
        assert t == 0.5 and frame0.shape[-2] % 16 == 0 and frame0.shape[-1] % 16 == 0
        evens = torch.nn.functional.pad(video[0::2] / 255.0, (2, 3, 4, 5), mode="replicate")  # 23x27 -> 32x32
        index = [int((evens - f).abs().flatten(1).sum(1).argmin()) for f in frame0]
        odds = torch.nn.functional.pad(video[1::2] / 255.0, (2, 3, 4, 5), mode="replicate")
        return odds[index]
    return interpolate


def test_motion_smoothness_oracle_offset_and_truncation():
    torch.manual_seed(0)
    video = torch.randint(10, 230, (7, 3, 23, 27)).float()
    video += torch.arange(7).view(7, 1, 1, 1)  # distinct frames for the oracle look-up
    assert MotionSmoothness(oracle(video)).video_value(video) == 1.0
    oracle_fn = oracle(video)
    for d in (3.0, 12.0):  # + 0.5 keeps float rounding of (x + d) / 255 * 255 away from the truncation edge
        metric = MotionSmoothness(lambda f0, f1, t, d=d: oracle_fn(f0, f1, t) + (d + 0.5) / 255.0)
        assert metric.video_value(video) == pytest.approx((255 - d) / 255)
    # x + 0.9 is truncated to x by the uint8 conversion, and values above 255 clamp to 255.
    assert MotionSmoothness(lambda f0, f1, t: oracle_fn(f0, f1, t) + 0.9 / 255.0).video_value(video) == 1.0
    white = torch.full((3, 3, 16, 16), 255.0)
    assert MotionSmoothness(lambda f0, f1, t: f0 + 1.0).video_value(white) == 1.0


def test_motion_smoothness_pairs_batches_and_mean_over_videos():
    calls = []

    def mean_of_neighbours(f0, f1, t):
        calls.append(len(f0))
        return (f0 + f1) / 2

    # Linear ramp: the midpoint of even frames is the odd frame exactly; T = 8 scores pairs (0,2), (2,4), (4,6).
    ramp = torch.arange(8, dtype=torch.float32).view(8, 1, 1, 1).expand(8, 3, 16, 16) * 10 + 60
    metric = MotionSmoothness(mean_of_neighbours, batch_size=2)
    assert metric.video_value(ramp) == 1.0
    assert calls == [2, 1]
    # Odd frames dark by 51: vfi = 51 -> 0.8; overall = mean of the two videos' scores.
    jumpy = ramp.clone()
    jumpy[1::2] -= 51
    metric.update(torch.stack([ramp, jumpy]).to(torch.uint8))
    assert metric.compute().item() == pytest.approx((1.0 + 0.8) / 2)


def test_motion_smoothness_errors():
    with pytest.raises(ValueError, match="at least 3 frames"):
        MotionSmoothness(lambda f0, f1, t: f0).video_value(torch.zeros(2, 3, 16, 16))
    with pytest.raises(ValueError, match="amt_root"):
        MotionSmoothness()
    with pytest.raises(MissingWeightsError, match="AMT-S.py"):
        MotionSmoothness(amt_root="/nonexistent", amt_weights="/nonexistent/amt-s.pth")


class Lerp(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.bias = torch.nn.Parameter(torch.zeros(()))

    def forward(self, frame0, frame1, t):
        return torch.lerp(frame0, frame1, t) + self.bias


def test_module_interpolator_stays_out_of_state_dict():
    metric = MotionSmoothness(Lerp())
    assert not any("bias" in k for k in metric.state_dict())
    ramp = torch.arange(5, dtype=torch.float32).view(5, 1, 1, 1).expand(5, 3, 16, 16) * 20
    assert metric.video_value(ramp) == 1.0
