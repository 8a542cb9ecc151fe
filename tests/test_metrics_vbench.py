"""VBench metric classes (part A): shared preprocessing, consistency, quality, drift, DDP reduction.

Closed forms use stub feature nets; the real architectures are built with random weights only to check shapes.
"""

from __future__ import annotations

import math
import socket
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch
from metrics_ddp_worker import AngleStub, angle_video, shards
from torch import Tensor, nn

from lvg.metrics.consistency import (
    BackgroundConsistency,
    SubjectConsistency,
    build_dino,
    clip_preprocess,
    consistency_terms,
    dino_forward,
    dino_preprocess,
    load_clip_visual,
)
from lvg.metrics.drift import Drift, segment_length
from lvg.metrics.quality import AestheticQuality, ImagingQuality
from lvg.metrics.video import (
    MissingWeightsError,
    as_video,
    as_videos,
    center_crop,
    resize_longer_side,
    resize_short_side,
)

WORKER = Path(__file__).parent / "metrics_ddp_worker.py"


def background(reduction: str = "pairs") -> BackgroundConsistency:
    return BackgroundConsistency(weights=AngleStub(), reduction=reduction)


def expected_s(degrees: list[float]) -> tuple[float, int]:
    """Reference ``(sum_i c_i, T - 1)`` of the consistency formula for unit vectors at the given angles."""

    def cos(a, b):
        return math.cos(math.radians(a - b))

    terms = [(max(0.0, cos(degrees[i - 1], degrees[i])) + max(0.0, cos(degrees[0], degrees[i]))) / 2
             for i in range(1, len(degrees))]
    return sum(terms), len(terms)


def test_as_videos_accepts_batches_single_videos_and_lists():
    batch = torch.randint(0, 256, (2, 3, 3, 4, 5), dtype=torch.uint8)
    videos = as_videos(batch)
    assert len(videos) == 2 and videos[0].dtype == torch.float32 and torch.equal(videos[1], batch[1].float())
    assert len(as_videos(batch[0].float())) == 1
    assert [len(v) for v in as_videos([batch[0, :2], batch[1]])] == [2, 3]
    with pytest.raises(ValueError, match="0..255"):
        as_videos(torch.full((2, 3, 4, 4), -1.0))


def test_resize_rules():
    frames = torch.rand(1, 3, 480, 832) * 255
    short = resize_short_side(frames, 224, "bilinear")
    assert short.shape[-2:] == (224, 388)  # int(224 * 832 / 480) = 388 (truncated)
    assert center_crop(short, 224).shape[-2:] == (224, 224)
    # CenterCrop offset int(round((388 - 224) / 2)) = 82.
    assert torch.equal(center_crop(short, 224), short[..., :, 82:306])
    assert resize_longer_side(frames, 512).shape[-2:] == (295, 512)
    small = torch.rand(1, 3, 100, 200)
    assert resize_longer_side(small, 512) is small


def test_preprocessing_sizes_with_real_architectures():
    frames = torch.rand(2, 3, 480, 832) * 255
    x = dino_preprocess(frames)
    assert x.shape == (2, 3, 224, 388)  # no center crop; the patch conv drops the 4-pixel remainder
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        vit = build_dino().eval()
        clip = load_clip_visual("ViT-B-32-quickgelu", None, "test")
    with torch.no_grad():
        assert dino_forward(vit, x).shape == (2, 768)
        square = torch.randn(1, 3, 224, 224)
        # At the native 14x14 grid DINO's forward is timm's CLS output (num_classes=0 pools the token).
        torch.testing.assert_close(dino_forward(vit, square), vit(square))
        c = clip_preprocess(frames)
        assert c.shape == (2, 3, 224, 224)
        assert clip(c).shape == (2, 512)
    # OpenAI CLIP uses QuickGELU: open_clip's plain ViT-B-32 would build nn.GELU.
    assert any(type(m).__name__ == "QuickGELU" for m in clip.modules())


def test_dino_interpolates_its_position_table_for_any_non_square_input():
    """DINO's rule: keep the table only for the native patch count *and* a square pixel input. 224x230 patchifies
    to the native 14x14 grid but is interpolated by the scale 14.1 / 14 (parity with VBench checked by
    benchmarks/vbench_parity.py: 5e-8 with the rule, 8e-5 without it)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        vit = build_dino().eval()
    x = torch.randn(1, 3, 224, 230)
    resampled = build_dino().eval()
    resampled.load_state_dict(vit.state_dict())
    with torch.no_grad():
        table = vit.pos_embed[:, 1:].reshape(1, 14, 14, -1).permute(0, 3, 1, 2)
        table = torch.nn.functional.interpolate(table, scale_factor=(14.1 / 14, 14.1 / 14), mode="bicubic")
        assert table.shape[-2:] == (14, 14)
        resampled.pos_embed[:, 1:] = table.flatten(2).transpose(1, 2)
        # The square crop keeps the (replaced) table as is, and the conv never sees the 6 dropped columns.
        torch.testing.assert_close(dino_forward(vit, x), dino_forward(resampled, x[..., :224]))
        assert not torch.allclose(dino_forward(vit, x), dino_forward(vit, x[..., :224]))


def test_identical_frames_give_exactly_one():
    with pytest.warns(UserWarning, match="RANDOM"):
        metric = SubjectConsistency(weights=None)
    video = (torch.rand(1, 3, 40, 72) * 255).expand(4, -1, -1, -1)
    assert metric.video_value(video) == 1.0
    assert background().video_value(angle_video([30] * 5)) == 1.0


def test_closed_form_angles_and_clamp():
    # c_1 = (cos 60 + cos 60) / 2 = 0.5; c_2 = (cos 60 + max(0, cos 120)) / 2 = 0.25 (clamped at 0).
    assert background().video_value(angle_video([0, 60, 120])) == pytest.approx(0.375, abs=1e-12)
    terms = consistency_terms(torch.tensor([[1.0, 0.0], [-1.0, 0.0]]))
    assert terms.tolist() == [0.0]


def test_reduction_pairs_vs_videos_on_unequal_lengths():
    videos = [[0, 60, 120], [10, 20, 30, 40, 50], [0, 90, 100, 0, 45, 45, 170]]
    sums, pairs = zip(*(expected_s(v) for v in videos))
    by_pairs, by_videos = background("pairs"), background("videos")
    for v in videos:
        by_pairs.update([angle_video(v)])
        by_videos.update(angle_video(v))
    # Features are fp32 (as VBench's), so the closed form holds to ~1e-7.
    assert float(by_pairs.compute()) == pytest.approx(sum(sums) / sum(pairs), abs=1e-6)
    assert float(by_videos.compute()) == pytest.approx(sum(s / p for s, p in zip(sums, pairs)) / 3, abs=1e-6)
    assert sum(sums) / sum(pairs) != pytest.approx(sum(s / p for s, p in zip(sums, pairs)) / 3)
    with pytest.raises(ValueError, match="at least 2 frames"):
        by_pairs.update([angle_video([0])])


class ConstantClip(nn.Module):
    """Stub CLIP tower: feature = 3 + scale * (mean of the input) * a fixed ramp; records its input shapes."""

    def __init__(self, scale: float = 1.0):
        super().__init__()
        self.scale = scale
        self.register_buffer("direction", torch.linspace(-1, 1, 768))
        self.shapes: list[tuple[int, ...]] = []

    def forward(self, images: Tensor) -> Tensor:
        self.shapes.append(tuple(images.shape))
        return self.scale * images.mean((1, 2, 3))[:, None] * self.direction + 3.0


def test_aesthetic_closed_form():
    head = nn.Linear(768, 1)
    with torch.no_grad():
        head.weight.fill_(0.5)
        head.bias.fill_(2.0)
    # A feature with all 768 entries equal normalises to 1/sqrt(768): head = 0.5 * sqrt(768) + 2, then / 10.
    constant = AestheticQuality(weights=ConstantClip(scale=0.0), head_weights=head)
    grey = torch.rand(2, 3, 48, 80) * 255
    assert constant.video_value(grey) == pytest.approx((0.5 * math.sqrt(768) + 2.0) / 10, rel=1e-6)
    # Frame-dependent features: per video mean over frames, overall mean over videos.
    clip = ConstantClip(scale=1.0)
    metric = AestheticQuality(weights=clip, head_weights=head)
    video = torch.rand(3, 3, 48, 80) * 255
    feats = torch.nn.functional.normalize(clip(clip_preprocess(video)), dim=-1)
    expected = float((head(feats).squeeze(-1) / 10).mean())
    assert metric.video_value(video) == pytest.approx(expected, rel=1e-6)
    assert clip.shapes[-1] == (3, 3, 224, 224)
    metric.update([video, grey])
    assert float(metric.compute()) == pytest.approx((expected + metric.video_value(grey)) / 2, rel=1e-6)
    assert metric.name == "aesthetic_quality" and metric.min_frames == 1


class RecordingScorer(nn.Module):
    """Stub MUSIQ: score = 100 * mean pixel in [0, 1]; records its input sizes."""

    def __init__(self):
        super().__init__()
        self.shapes: list[tuple[int, ...]] = []

    def forward(self, images: Tensor) -> Tensor:
        self.shapes.append(tuple(images.shape[-2:]))
        assert float(images.min()) >= 0.0 and float(images.max()) <= 1.0
        return images.mean((1, 2, 3)) * 100.0


def test_imaging_quality_with_stub_scorer():
    scorer = RecordingScorer()
    metric = ImagingQuality(weights=scorer)
    a = torch.full((2, 3, 480, 832), 51.0)  # 0.2
    b = torch.cat([torch.full((1, 3, 48, 64), 102.0), torch.full((1, 3, 48, 64), 204.0)])  # 0.4, 0.8
    assert metric.video_value(a) == pytest.approx(0.2, abs=1e-6)
    assert scorer.shapes[-1] == (295, 512)
    metric.update([a, b])
    assert scorer.shapes[-1] == (48, 64)  # no upscaling of small frames
    assert float(metric.compute()) == pytest.approx((0.2 + 0.6) / 2, abs=1e-6)


def openai_archive(model: nn.Module, path: Path) -> None:
    """Save ``model``'s weights as OpenAI's releases are: a TorchScript archive under OpenAI's names (open_clip's,
    without its attention-mask buffer), with the three hyper-parameter entries ``clip.load`` drops."""
    state = {k: v for k, v in model.state_dict().items() if k != "attn_mask"}
    state |= {"input_resolution": torch.tensor(224), "context_length": torch.tensor(77),
              "vocab_size": torch.tensor(49408)}
    root = nn.Module()
    for key, value in state.items():
        *parents, leaf = key.split(".")
        node = root
        for name in parents:
            if not hasattr(node, name):
                node.add_module(name, nn.Module())
            node = getattr(node, name)
        node.register_buffer(leaf, value.clone())
    torch.jit.save(torch.jit.script(root), str(path))


def test_openai_clip_archives_load_as_vbench_reads_them(tmp_path):
    """VBench's cache holds OpenAI's own ViT-B-32.pt / ViT-L-14.pt; a directory with one of them is enough, the
    weights come out fp16-rounded as OpenAI released them, and the wrong size is refused."""
    import open_clip

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = open_clip.create_model("ViT-B-32-quickgelu").eval()
    openai_archive(model, tmp_path / "ViT-B-32.pt")
    metric = BackgroundConsistency(weights=tmp_path)
    x = torch.randn(2, 3, 224, 224)
    open_clip.model.convert_weights_to_lp(model, dtype=torch.float16)  # OpenAI's fp16 rounding, its layer choice
    with torch.no_grad():
        torch.testing.assert_close(metric.net("clip")(x), model.float().visual(x), rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="patch size 32 and width 768; ViT-L-14-quickgelu needs 14 and 1024"):
        load_clip_visual("ViT-L-14-quickgelu", tmp_path / "ViT-B-32.pt", "AestheticQuality")


def test_missing_weights_path_is_a_clear_error(tmp_path):
    with pytest.raises(MissingWeightsError, match="dino_vitbase16_pretrain.pth"):
        SubjectConsistency(weights=tmp_path / "nope.pth")
    with pytest.raises(ValueError, match="vit_base_patch32_clip_224.openai"):
        BackgroundConsistency(weights=str(tmp_path))
    with pytest.raises(ValueError, match="sa_0_4_vit_l_14_linear.pth"):
        AestheticQuality(weights=ConstantClip(), head_weights=tmp_path / "head.pth")


def test_nets_are_frozen_and_not_in_state_dict():
    with pytest.warns(UserWarning):
        metric = SubjectConsistency(weights=None)
    keys = list(metric.state_dict())
    assert not any("blocks" in k or "pos_embed" in k for k in keys), keys
    net = metric.net("dino")
    assert not net.training and not any(p.requires_grad for p in net.parameters())
    holder = nn.Module()
    holder.metric = background()
    assert list(holder.state_dict()) == []
    metric.to(torch.float64)  # dtype casts leave the feature net in fp32
    assert next(metric.net("dino").parameters()).dtype == torch.float32


def test_drift():
    assert [segment_length(t, 2) for t in (5, 13, 14, 20, 100)] == [2, 2, 2, 3, 15]
    assert segment_length(10, 3) == 3 and segment_length(3, 1) == 1
    drift = Drift(background())
    assert drift.name == "background_consistency" and drift.higher_is_better is False and drift.min_frames == 2
    assert drift.video_value(angle_video([40] * 20)) == 0.0
    # 20 frames -> segments of 3: [0, 0, 0] scores 1, the last three [0, 60, 120] score 0.375.
    video = angle_video([0] * 17 + [0, 60, 120])
    assert drift.video_value(video) == pytest.approx(0.625, abs=1e-12)
    drift.update([video, angle_video([40] * 20)])
    assert float(drift.compute()) == pytest.approx(0.625 / 2, abs=1e-12)
    assert float(drift.metric.count) == 0  # the wrapped metric's own states are untouched


class CountingStub(AngleStub):
    """AngleStub that counts the frames it embeds."""

    frames = 0

    def forward(self, images: Tensor) -> Tensor:
        self.frames += len(images)
        return super().forward(images)


class CountingScorer(nn.Module):
    """Stub MUSIQ: the mean grey level in 0..100, counting the frames it scores."""

    frames = 0

    def forward(self, images: Tensor) -> Tensor:
        self.frames += len(images)
        return images.mean((1, 2, 3)) * 100


@pytest.mark.parametrize("make", [
    lambda: (CountingStub(), lambda stub: BackgroundConsistency(weights=stub)),
    lambda: (CountingStub(), lambda stub: BackgroundConsistency(weights=stub, reduction="videos")),
    lambda: (CountingScorer(), lambda stub: ImagingQuality(weights=stub)),
], ids=["pairs", "videos", "imaging"])
def test_clip_scores_share_frame_features_and_equal_scoring_each_clip_alone(make):
    video = angle_video([0, 10, 30, 60, 100, 150, 170, 175, 178, 179, 30])
    clips = [slice(0, 11), slice(0, 2), slice(9, 11), slice(1, 4), slice(4, 7), slice(7, 10)]
    stub, build = make()
    metric = build(stub)
    shared = metric.clip_scores(video, None, clips)
    assert stub.frames == len(video)  # every frame embedded once for all six clips
    alone = [metric._score(as_video(video[c]), None) for c in clips]
    for (n, d), (n_alone, d_alone) in zip(shared, alone, strict=True):
        assert d == d_alone and n == pytest.approx(n_alone, abs=1e-12)
    metric.update(scores=shared[:1])
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # torchmetrics' bookkeeping saw the update: no "compute before update"
        assert float(metric.compute()) == pytest.approx(metric.video_value(video), abs=1e-12)
    with pytest.raises(ValueError, match="takes videos or scores, not both or neither"):
        metric.update()
    with pytest.raises(ValueError, match=r"at least \d frames per clip"):
        metric.clip_scores(video, None, [slice(3, 3)])


def test_an_incomplete_metric_is_refused_when_built():
    from lvg.metrics import FrameLocalMetric

    class FeaturesOnly(FrameLocalMetric):
        def frame_features(self, video: Tensor) -> Tensor:
            return video.mean((1, 2, 3))

    with pytest.raises(TypeError, match="abstract method.*score_features"):
        FeaturesOnly()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.distributed
def test_ddp_two_processes_equal_single_process(tmp_path):
    out, port = tmp_path / "result.pt", str(free_port())
    procs = [subprocess.Popen([sys.executable, str(WORKER), str(rank), "2", port, str(out)], cwd=WORKER.parent,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for rank in range(2)]
    for p in procs:
        _, err = p.communicate(timeout=120)
        assert p.returncode == 0, err[-3000:]
    single = []
    for reduction in ("pairs", "videos"):
        metric = background(reduction)
        metric.update([v for shard in shards() for v in shard])
        single.append(float(metric.compute()))
    assert torch.load(out) == pytest.approx(single, abs=1e-12)
